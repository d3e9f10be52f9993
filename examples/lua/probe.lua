-- probe.lua NAME... - require each module and print what came back: the
-- value, the loader data (the file name), or the error message. Stock Lua
-- and Lua with finderd_lua must print the same bytes.
for _, name in ipairs(arg) do
	local ok, value, where = pcall(require, name)
	if ok then
		print(name, "ok", tostring(value), tostring(where))
	else
		print(name, "error", value)
	end
end
