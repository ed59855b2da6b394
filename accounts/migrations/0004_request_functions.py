from django.db import migrations

# Two writes an API request may need, as functions a SELECT can call: the key that
# authenticates a request also counts it against its throttle window and marks itself used,
# in the one statement that reads it (accounts/api_keys.py, accounts/throttling.py).
# Volatile (the default), so PostgreSQL calls them once per row they are asked for, and only
# where a CASE that guards them is true.
COUNT_REQUEST = """
CREATE FUNCTION accounts_count_request(
    p_scope varchar, p_key varchar, p_window_start timestamptz, p_window_end timestamptz, p_limit integer
) RETURNS integer LANGUAGE sql AS $$
    -- One more request of the caller in the window; NULL once the limit is reached, when the
    -- conflict's WHERE leaves the row alone (so a flood of refused requests rewrites nothing).
    INSERT INTO accounts_requestcount AS c (scope, key, window_start, window_end, hits)
    VALUES (p_scope, p_key, p_window_start, p_window_end, 1)
    ON CONFLICT (scope, key, window_start) DO UPDATE
    SET hits = c.hits + 1
    WHERE c.hits < p_limit
    RETURNING hits
$$
"""

TOUCH_KEY = """
CREATE FUNCTION accounts_touch_key(p_id bigint, p_moment timestamptz, p_stale timestamptz)
RETURNS boolean LANGUAGE sql AS $$
    -- Conditional, so of the workers that race here within one interval only the first writes.
    UPDATE accounts_apikey SET last_used_at = p_moment
    WHERE id = p_id AND (last_used_at IS NULL OR last_used_at <= p_stale)
    RETURNING true
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_api_keys"),
    ]

    operations = [
        migrations.RunSQL(
            COUNT_REQUEST,
            reverse_sql="DROP FUNCTION accounts_count_request(varchar, varchar, timestamptz, timestamptz, integer)",
        ),
        migrations.RunSQL(TOUCH_KEY, reverse_sql="DROP FUNCTION accounts_touch_key(bigint, timestamptz, timestamptz)"),
    ]
