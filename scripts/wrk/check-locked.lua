-- wrk's request for the benchmark's cross-check (scripts/bench.sh): CheckTOTP over REST for a
-- locked user, which the service refuses (code 9, HTTP 400) without writing anything, so every
-- request is the same and none needs a fresh code. The token comes from the environment.
wrk.method = "POST"
wrk.body = '{"code":"123456"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOTP_TOKEN")
