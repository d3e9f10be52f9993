/*
 * finderd_lua.c - Lua 5.4 finds its modules through finderd.
 *
 * `require "finderd_lua"` (or `lua5.4 -l finderd_lua`) connects to the
 * daemon, sends one Snapshot of the directories package.path names, and
 * replaces Lua's own file searcher (package.searchers[2]) with one that
 * follows the same rules: package.path is read at every search, "." in the
 * module name becomes "/", "?" in each ";"-separated template becomes the
 * name, templates are tried in order, the first readable file is loaded,
 * and a miss produces Lua's own "no file '...'" message.
 *
 * The only difference is how a template is tried. Lua calls fopen() on
 * each; this searcher asks the resolver first (memory, no system call):
 *   - "does not exist" (-ENOENT, -ENOTDIR): skipped, as fopen() would fail;
 *   - "exists": confirmed with Lua's own fopen() test (the load opens the
 *     file anyway), so permissions and directories behave exactly as in Lua;
 *   - anything the resolver does not serve: fopen(), as Lua does.
 * Relative templates ("./?.lua") are asked about as getcwd() + "/" +
 * filename; the filename Lua sees (chunk names, messages) is unchanged.
 *
 * Without a daemon (socket absent, FINDERD=off, any error at start-up) the
 * searchers are left alone: stock Lua. If the daemon goes away later, the
 * resolver answers "not served" and every template is fopen()ed: stock Lua
 * again.
 *
 * Freshness: the daemon learns of a change through inotify, microseconds
 * after it happens. So that a module this process writes and then requires
 * is found at once, as stock Lua would, io.open() for writing, os.remove()
 * and os.rename() tell the resolver which directories they change
 * (finderd_client_touch(): the next search revalidates those, one Lookup),
 * and os.execute() distrusts everything once it returns (a subprocess, such
 * as an installer, may have changed anything). Changes made any other way
 * (C modules, io.popen() children) are seen within the daemon's reaction
 * time; finderd_lua.invalidate() makes the next search exact, as Python's
 * importlib.invalidate_caches() does.
 *
 * Environment, as for the Python client: FINDERD=off, FINDERD_SOCKET,
 * FINDERD_TIMEOUT_MS (call deadline), FINDERD_CONNECT_TIMEOUT_MS.
 *
 * Module functions: state() ("active", "off", or "fell back: <why>"),
 * invalidate(), counters() (a table of the resolver's counters).
 *
 * Only Lua files (package.path); C modules (package.cpath) keep Lua's
 * searcher.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <finderd.h>

#include "finderd_lua.h"

#define BOX_MT "finderd_lua.client"
#define REG_MODULE "finderd_lua.module"
#define MAX_PATH 4096

/* The resolver and what the searcher remembers between searches. */
struct box {
	struct finderd_client *client;
	char state[192];
	char cwd[MAX_PATH]; /* the last working directory made sure of */
};

/* ------------------------------------------------------------ paths */

/* The directory a template's files lie in: its text up to the last '/'
 * before the first mark. 0 when it has none (or is relative). */
static size_t template_root(const char *t, size_t len)
{
	const char *mark = memchr(t, LUA_PATH_MARK[0], len);
	size_t end = mark ? (size_t)(mark - t) : len;

	if (len == 0 || t[0] != '/')
		return 0;
	while (end > 0 && t[end - 1] != '/')
		end--;
	return end > 1 ? end - 1 : end; /* "/x/" -> "/x", "/" stays */
}

/* Make sure the resolver holds @dir (one Lookup the first time it does
 * not). Idempotent and cheap for a directory it holds. */
static void hold_dir(struct finderd_client *c, const char *dir, size_t len)
{
	const struct finderd_entry *e;
	const struct finderd_dir *d;
	size_t n;

	if (finderd_client_dir(c, dir, len, &d) != 0)
		(void)finderd_client_listdir(c, dir, len, &e, &n);
}

/* package.path changed since the last search: hold its new roots. */
static void hold_roots(struct finderd_client *c, const char *path)
{
	const char *t = path;

	while (*t) {
		size_t len = strcspn(t, LUA_PATH_SEP);
		size_t root = template_root(t, len);

		if (root)
			hold_dir(c, t, root);
		t += len + (t[len] != '\0');
	}
}

static int has_relative_template(const char *path)
{
	const char *t = path;

	while (*t) {
		size_t len = strcspn(t, LUA_PATH_SEP);

		if (len && t[0] != '/')
			return 1;
		t += len + (t[len] != '\0');
	}
	return 0;
}

/* ------------------------------------------------------------ the searcher */

/* Lua's test: the file opens for reading. */
static int fopen_readable(const char *filename)
{
	FILE *f = fopen(filename, "r");

	if (f == NULL)
		return 0;
	fclose(f);
	return 1;
}

/* One search: the working directory is read (getcwd()) at most once, and
 * only when a relative template is reached. */
struct search {
	struct box *b;
	int cwd_read;
};

static void refresh_cwd(struct box *b);

/* @filename as the resolver keys it: itself when absolute, else under the
 * working directory. NULL when there is no such form. */
static const char *absolute(struct search *s, const char *filename, char *buf, size_t *len)
{
	const struct box *b = s->b;
	size_t cl, fl = strlen(filename);

	if (filename[0] == '/') {
		*len = fl;
		return filename;
	}
	if (!s->cwd_read) {
		refresh_cwd(s->b);
		s->cwd_read = 1;
	}
	cl = strlen(b->cwd);
	if (cl == 0 || cl + 1 + fl >= MAX_PATH)
		return NULL;
	memcpy(buf, b->cwd, cl);
	buf[cl] = '/';
	memcpy(buf + cl + 1, filename, fl + 1);
	*len = cl + 1 + fl;
	return buf;
}

static int readable(struct search *s, const char *filename)
{
	struct finderd_stat st;
	char buf[MAX_PATH];
	size_t len;
	const char *p = absolute(s, filename, buf, &len);
	int ret = p ? finderd_client_stat(s->b->client, p, len, &st) : FINDERD_ENOTSERVED;

	if (ret == -ENOENT || ret == -ENOTDIR)
		return 0;
	return fopen_readable(filename);
}

/* Lua's next template of the ";"-separated list at *@path (loadlib.c). */
static const char *next_filename(char **path, char *end)
{
	char *sep, *name = *path;

	if (name == end)
		return NULL;
	if (*name == '\0') { /* from the previous iteration */
		*name = *LUA_PATH_SEP;
		name++;
	}
	sep = strchr(name, *LUA_PATH_SEP);
	if (sep == NULL)
		sep = end;
	*sep = '\0';
	*path = sep;
	return name;
}

/* Lua's message for a module no template finds. */
static void push_not_found(lua_State *L, const char *path)
{
	luaL_Buffer b;

	luaL_buffinit(L, &b);
	luaL_addstring(&b, "no file '");
	luaL_addgsub(&b, path, LUA_PATH_SEP, "'\n\tno file '");
	luaL_addstring(&b, "'");
	luaL_pushresult(&b);
}

/* Lua's searchpath() with the resolver's readable(). Pushes the file name
 * found, or the error message (and returns NULL). */
static const char *search_path(lua_State *L, struct box *b, const char *name, const char *path)
{
	struct search s = { b, 0 };
	luaL_Buffer buff;
	char *pathname, *endpathname;
	const char *filename;

	if (strchr(name, '.') != NULL)
		name = luaL_gsub(L, name, ".", LUA_DIRSEP);
	luaL_buffinit(L, &buff);
	luaL_addgsub(&buff, path, LUA_PATH_MARK, name);
	luaL_addchar(&buff, '\0');
	pathname = luaL_buffaddr(&buff);
	endpathname = pathname + luaL_bufflen(&buff) - 1;
	while ((filename = next_filename(&pathname, endpathname)) != NULL) {
		if (readable(&s, filename))
			return lua_pushstring(L, filename);
	}
	luaL_pushresult(&buff);
	push_not_found(L, lua_tostring(L, -1));
	return NULL;
}

/* The working directory relative templates resolve against; held. */
static void refresh_cwd(struct box *b)
{
	char now[MAX_PATH];

	if (!getcwd(now, sizeof(now))) {
		b->cwd[0] = '\0'; /* relative templates go to fopen() */
		return;
	}
	if (strcmp(now, b->cwd) != 0) {
		memcpy(b->cwd, now, strlen(now) + 1);
		hold_dir(b->client, b->cwd, strlen(b->cwd));
	}
}

static int checkload(lua_State *L, int ok, const char *filename)
{
	if (ok) {
		lua_pushstring(L, filename);
		return 2;
	}
	return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
			  lua_tostring(L, 1), filename, lua_tostring(L, -1));
}

/*
 * package.searchers[2]. Upvalues: 1 the package table, 2 the box, 3 the
 * package.path the roots were last held for.
 */
static int searcher(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct box *b = lua_touserdata(L, lua_upvalueindex(2));
	const char *path, *filename;

	lua_getfield(L, lua_upvalueindex(1), "path");
	path = lua_tostring(L, -1);
	if (path == NULL)
		return luaL_error(L, "'package.%s' must be a string", "path");
	if (!lua_rawequal(L, -1, lua_upvalueindex(3))) {
		hold_roots(b->client, path);
		lua_pushvalue(L, -1);
		lua_replace(L, lua_upvalueindex(3));
	}
	filename = search_path(L, b, name, path);
	if (filename == NULL)
		return 1;
	return checkload(L, luaL_loadfile(L, filename) == LUA_OK, filename);
}

/* ------------------------------------------------------------ freshness */

/* This process is about to change @path: revalidate its directory before
 * the next answer from it. */
static void touch(struct box *b, const char *path)
{
	char buf[MAX_PATH];
	size_t cl, pl = strlen(path);

	if (!b->client)
		return;
	if (path[0] == '/') {
		finderd_client_touch(b->client, path, pl);
		return;
	}
	while (path[0] == '.' && path[1] == '/') { /* "./x" is "x" */
		path += 2;
		pl -= 2;
	}
	if (!getcwd(buf, sizeof(buf)) || (cl = strlen(buf)) + 1 + pl >= sizeof(buf)) {
		finderd_client_invalidate(b->client);
		return;
	}
	buf[cl] = '/';
	memcpy(buf + cl + 1, path, pl + 1);
	finderd_client_touch(b->client, buf, cl + 1 + pl);
}

/* Call upvalue 1 (the original function) with this call's arguments. */
static int call_original(lua_State *L)
{
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

static int hooked_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	const char *mode = luaL_optstring(L, 2, "r");

	if (strpbrk(mode, "wa+"))
		touch(lua_touserdata(L, lua_upvalueindex(2)), path);
	return call_original(L);
}

static int hooked_remove(lua_State *L)
{
	touch(lua_touserdata(L, lua_upvalueindex(2)), luaL_checkstring(L, 1));
	return call_original(L);
}

static int hooked_rename(lua_State *L)
{
	struct box *b = lua_touserdata(L, lua_upvalueindex(2));

	touch(b, luaL_checkstring(L, 1));
	touch(b, luaL_checkstring(L, 2));
	return call_original(L);
}

static int hooked_execute(lua_State *L)
{
	struct box *b = lua_touserdata(L, lua_upvalueindex(2));
	int n = call_original(L);

	if (b->client)
		finderd_client_invalidate(b->client);
	return n;
}

/* Replace @lib.@name (lib table at the top) with @fn over the original. */
static void hook(lua_State *L, int box_index, const char *name, lua_CFunction fn)
{
	lua_getfield(L, -1, name);
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	lua_pushvalue(L, box_index);
	lua_pushcclosure(L, fn, 2);
	lua_setfield(L, -2, name);
}

static void install_hooks(lua_State *L, int box_index)
{
	if (lua_getglobal(L, LUA_IOLIBNAME) == LUA_TTABLE)
		hook(L, box_index, "open", hooked_open);
	lua_pop(L, 1);
	if (lua_getglobal(L, LUA_OSLIBNAME) == LUA_TTABLE) {
		hook(L, box_index, "remove", hooked_remove);
		hook(L, box_index, "rename", hooked_rename);
		hook(L, box_index, "execute", hooked_execute);
	}
	lua_pop(L, 1);
}

/* ------------------------------------------------------------ start-up */

/* The Snapshot: every absolute template's root, and the working directory
 * when a template is relative. */
static int snapshot(struct box *b, const char *path)
{
	static const struct finderd_str lua_suffix = { ".lua", 4 };
	struct finderd_interpreter who = { "lua", LUA_VERSION_MAJOR "." LUA_VERSION_MINOR "."
					   LUA_VERSION_RELEASE, NULL, &lua_suffix, 1,
					   NULL, 0, NULL, 0 };
	struct finderd_snapshot_request req = { &who, NULL, 0, { NULL, 0 }, 0, 0 };
	struct finderd_str roots[64];
	const char *t = path;
	size_t n = 0, i;

	while (*t && n < 64) {
		size_t len = strcspn(t, LUA_PATH_SEP), root = template_root(t, len);

		for (i = 0; root && i < n; i++)
			if (roots[i].len == root && memcmp(roots[i].data, t, root) == 0)
				root = 0;
		if (root) {
			roots[n].data = t;
			roots[n++].len = root;
		}
		t += len + (t[len] != '\0');
	}
	if (has_relative_template(path) && n < 64 && getcwd(b->cwd, sizeof(b->cwd))) {
		roots[n].data = b->cwd;
		roots[n++].len = strlen(b->cwd);
	}
	req.sys_path = roots;
	req.n_sys_path = n;
	return finderd_client_snapshot(b->client, &req);
}

static int box_gc(lua_State *L)
{
	struct box *b = luaL_checkudata(L, 1, BOX_MT);

	finderd_client_free(b->client);
	b->client = NULL;
	return 0;
}

static struct box *module_box(lua_State *L)
{
	struct box *b;

	lua_getfield(L, LUA_REGISTRYINDEX, REG_MODULE);
	lua_getfield(L, -1, "_box");
	b = luaL_checkudata(L, -1, BOX_MT);
	lua_pop(L, 2);
	return b;
}

static int l_state(lua_State *L)
{
	lua_pushstring(L, module_box(L)->state);
	return 1;
}

static int l_invalidate(lua_State *L)
{
	finderd_client_invalidate(module_box(L)->client);
	return 0;
}

static int l_counters(lua_State *L)
{
	struct box *b = module_box(L);
	struct finderd_client_counters k;

	memset(&k, 0, sizeof(k));
	if (b->client)
		finderd_client_counters(b->client, &k);
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, (lua_Integer)k.answered);
	lua_setfield(L, -2, "answered");
	lua_pushinteger(L, (lua_Integer)k.not_served);
	lua_setfield(L, -2, "not_served");
	lua_pushinteger(L, (lua_Integer)k.lookups);
	lua_setfield(L, -2, "lookups");
	lua_pushinteger(L, (lua_Integer)k.revalidations);
	lua_setfield(L, -2, "revalidations");
	return 1;
}

/* Milliseconds from the environment (as the Python client reads them), in
 * microseconds; 0 (the library's default) when unset or not a number. */
static uint32_t env_ms(const char *name)
{
	const char *v = getenv(name);
	char *end;
	unsigned long ms = v ? strtoul(v, &end, 10) : 0;

	if (!v || *v == '\0' || *end != '\0' || ms == 0 || ms > 3600000)
		return 0;
	return (uint32_t)ms * 1000u;
}

/* Connect and snapshot; on success replace package.searchers[2] with the
 * searcher (box at the top of the stack). */
static void install(lua_State *L, struct box *b, int box_index)
{
	const char *env = getenv("FINDERD");
	struct finderd_options o;
	const char *path;
	int ret;

	if (env && strcmp(env, "off") == 0) {
		snprintf(b->state, sizeof(b->state), "off");
		return;
	}
	lua_getglobal(L, LUA_LOADLIBNAME);
	lua_getfield(L, -1, "path");
	path = lua_tostring(L, -1);
	finderd_options_init(&o);
	o.connect_timeout_us = env_ms("FINDERD_CONNECT_TIMEOUT_MS");
	o.call_timeout_us = env_ms("FINDERD_TIMEOUT_MS");
	ret = path ? finderd_client_new(&o, &b->client) : -EINVAL;
	if (ret == 0)
		ret = snapshot(b, path);
	if (ret) {
		snprintf(b->state, sizeof(b->state), "fell back: %s", finderd_strerror(ret));
		finderd_client_free(b->client);
		b->client = NULL;
		lua_pop(L, 2);
		return;
	}
	lua_getfield(L, -2, "searchers"); /* box ... package path searchers */
	lua_pushvalue(L, -3);             /* 1: package */
	lua_pushvalue(L, box_index);      /* 2: the box */
	lua_pushvalue(L, -4);             /* 3: the path its roots are held for */
	lua_pushcclosure(L, searcher, 3);
	lua_rawseti(L, -2, 2);
	lua_pop(L, 3);
	install_hooks(L, box_index);
	snprintf(b->state, sizeof(b->state), "active");
}

int luaopen_finderd_lua(lua_State *L)
{
	static const luaL_Reg funcs[] = {
		{ "state", l_state },
		{ "invalidate", l_invalidate },
		{ "counters", l_counters },
		{ NULL, NULL },
	};
	struct box *b;

	/* Once per state: a second require finds the module in package.loaded,
	 * but a host may also call this directly. */
	if (lua_getfield(L, LUA_REGISTRYINDEX, REG_MODULE) == LUA_TTABLE)
		return 1;
	lua_pop(L, 1);
	luaL_newlib(L, funcs);
	b = lua_newuserdatauv(L, sizeof(*b), 0);
	memset(b, 0, sizeof(*b));
	if (luaL_newmetatable(L, BOX_MT)) {
		lua_pushcfunction(L, box_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	install(L, b, lua_gettop(L));
	lua_setfield(L, -2, "_box");
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, REG_MODULE);
	return 1;
}
