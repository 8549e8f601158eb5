-- GCRA (generic cell rate algorithm), atomically in Redis, so every gateway process
-- draws on one budget. The key holds the theoretical arrival time (TAT) in microseconds.
-- KEYS[1]: the caller's key; ARGV[1]: emission interval (us per event);
-- ARGV[2]: burst (events); ARGV[3]: cost (events in this request);
-- ARGV[4]: extra (events to take with it as far as the budget holds them: a lease);
-- ARGV[5]: refund (leased events that lapsed unspent, given back first).
-- Returns {allowed (0/1), remaining, reset (us until the budget is full),
-- retry after (us), events taken (cost plus the lease; 0 when refused)}.
-- Keep in step with `gcra` in src/app/rate_limit/gcra.rs, the in-process fallback (which has no
-- leases, so no refunds).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * interval
local cost = tonumber(ARGV[3])
local extra = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) - tonumber(ARGV[5]) * interval
if tat < now then
  tat = now
end
local fit = math.max(0, math.floor((now + window - tat) / interval))
if fit < cost then
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return {0, fit, tat - now, tat + cost * interval - window - now, 0}
end
local taken = math.min(fit, cost + extra)
local new_tat = tat + taken * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, fit - taken, new_tat - now, 0, taken}
