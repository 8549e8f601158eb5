-- GCRA (generic cell rate algorithm), atomically in Redis, so every gateway process
-- draws on one budget. The key holds the theoretical arrival time (TAT) in microseconds.
-- KEYS[1]: the caller's key; ARGV[1]: emission interval (us per event);
-- ARGV[2]: burst (events); ARGV[3]: cost (events in this request).
-- Returns {allowed (0/1), remaining, reset (us until the budget is full), retry after (us)}.
-- Keep in step with `gcra` in src/rate_limit.rs, the in-process fallback.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  local remaining = math.floor((now - (tat - burst * interval)) / interval)
  return {0, remaining, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
