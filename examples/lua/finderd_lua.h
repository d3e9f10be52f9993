/*
 * finderd_lua.h - the finderd_lua module, for hosts that link it in.
 */
#ifndef FINDERD_LUA_H
#define FINDERD_LUA_H

#include <lua.h>

/**
 * luaopen_finderd_lua() - open the module (as require "finderd_lua" does).
 *
 * Connects to the daemon, snapshots package.path's directories and replaces
 * package.searchers[2] with a searcher that resolves through the daemon;
 * leaves Lua's searchers alone when the daemon is absent or FINDERD=off.
 * Once per lua_State: later calls return the same module table.
 *
 * Return: 1 (the module table is pushed).
 */
int luaopen_finderd_lua(lua_State *L);

#endif /* FINDERD_LUA_H */
