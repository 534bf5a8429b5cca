-- The incident search (GET /api/incidents?q=..., central/incidents.py) is a substring match
-- (ILIKE '%text%'), which no B-tree helps: it read every site (a city has tens of thousands)
-- and every alarm's event (the alarms table only grows) for each search. Trigram indexes
-- (pg_trgm, shipped with PostgreSQL and trusted: the database's owner may create it) answer
-- such a match from the index; the search asks each table for its matching rows once.
--
-- Each table's searched fields are one text, so one index each (every index is paid for by
-- each summary and alarm event the ingest writes); they are joined by the ASCII unit
-- separator, which nobody types, so no match spans two fields.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION site_search_text(name text, address text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT name || E'\x1f' || address
$$;
CREATE INDEX sites_search_trgm ON sites USING gin (site_search_text(name, address) gin_trgm_ops);

-- An alarm's device id, and the site name and address its gateway sent (a site the center has
-- no summary of yet is found by them).
CREATE FUNCTION alarm_search_text(event jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(event ->> 'device_id', '') || E'\x1f'
        || coalesce(event -> 'site' ->> 'name', '') || E'\x1f'
        || coalesce(event -> 'site' ->> 'address', '')
$$;
CREATE INDEX alarms_search_trgm ON alarms USING gin (alarm_search_text(event) gin_trgm_ops);
-- The site's contacts (names and phones): searched only for those who may read phones.
CREATE INDEX alarms_contacts_trgm ON alarms
    USING gin (((event -> 'site' -> 'contacts')::text) gin_trgm_ops);
