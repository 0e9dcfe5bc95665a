-- The one-tap link key leaves the database: a copy of the database (a backup, a stolen disk)
-- held the key and could sign links that approve anything. The key now lives in its own
-- owner-only file (notify.link_key_file, by default beside the database). Links signed under
-- the old key stop working, which is the point.
DROP TABLE link_keys;
