/*
 * host.c - lua-finderd, a small Lua 5.4 interpreter that embeds libfinderd:
 * the finder is installed before the first require of the script, as a
 * launcher embedding the client does.
 *
 *   lua-finderd SCRIPT [ARGS...]     run SCRIPT with arg[0] = SCRIPT
 *   lua-finderd -e CHUNK             run CHUNK
 *
 * Errors go to stderr as "lua-finderd: MESSAGE" with a traceback, exit 1.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "finderd_lua.h"

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}

/* arg: the script at 0, its arguments from 1. */
static void set_arg(lua_State *L, int argc, char **argv)
{
	int i;

	lua_createtable(L, argc - 2, 1);
	for (i = 1; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - 1);
	}
	lua_setglobal(L, "arg");
}

static int run(lua_State *L, int argc, char **argv)
{
	int ret;

	lua_pushcfunction(L, traceback);
	if (strcmp(argv[1], "-e") == 0)
		ret = argc == 3 ? luaL_loadstring(L, argv[2]) : LUA_ERRSYNTAX;
	else
		ret = luaL_loadfile(L, argv[1]);
	if (ret == LUA_OK) {
		set_arg(L, argc, argv);
		ret = lua_pcall(L, 0, 0, -2);
	}
	if (ret != LUA_OK)
		fprintf(stderr, "lua-finderd: %s\n",
			lua_tostring(L, -1) ? lua_tostring(L, -1) : "usage: lua-finderd -e CHUNK");
	return ret == LUA_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
	lua_State *L;
	int ret;

	if (argc < 2) {
		fprintf(stderr, "usage: lua-finderd SCRIPT [ARGS...] | lua-finderd -e CHUNK\n");
		return 2;
	}
	L = luaL_newstate();
	if (!L)
		return 1;
	luaL_openlibs(L);
	/* Before anything runs: require "finderd_lua" finds it preloaded. */
	luaL_requiref(L, "finderd_lua", luaopen_finderd_lua, 0);
	lua_pop(L, 1);
	ret = run(L, argc, argv);
	lua_close(L);
	return ret;
}
