-- late.lua DIR NAME MODE - a module created by this process after a require
-- of it failed, then required again at once. MODE "io": written with
-- io.open; "execute": written by a subprocess (os.execute); "invalidate":
-- written with io.open, then finderd_lua.invalidate() (when loaded); "wait":
-- required until it works (at most 2 s). Prints each outcome.
local dir, name, mode = arg[1], arg[2], arg[3]
local path = dir .. "/" .. name .. ".lua"
print(pcall(require, name))
if mode == "execute" then
	os.execute("echo \"return '" .. name .. " made late'\" > " .. path)
else
	local f = assert(io.open(path, "w"))
	f:write("return '" .. name .. " made late'\n")
	f:close()
end
if mode ~= "wait" then
	local finderd = package.loaded.finderd_lua
	if mode == "invalidate" and finderd then finderd.invalidate() end
	print(pcall(require, name))
else
	local deadline, ok, value = os.clock() + 2
	repeat
		ok, value = pcall(require, name)
	until ok or os.clock() > deadline
	print(ok, ok and value or "still not found after 2 s")
end
