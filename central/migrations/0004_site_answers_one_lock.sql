-- 0002's trigger ran per inserted alarm and took one advisory lock per alarm id, all held to the
-- end of the transaction: a batch of ~6,000 new alarms filled the server's lock table
-- (max_locks_per_transaction × max_connections, 6,400 on a default server) and failed with
-- "out of shared memory". Now one trigger per INSERT statement moves the waiting answers of all
-- its new alarms at once and takes a single lock, whatever the statement's size:
--
-- * the ingest takes the "sans" lock SHARED, so ingests never wait on each other for it;
-- * the alert page takes it EXCLUSIVE before it decides "not at the center yet" and keeps an
--   answer (central/alert_page.py): it waits for the ingests in flight to commit, and an ingest
--   that starts after it waits for its answer to commit. So an answer is either seen by the
--   trigger or finds the alarm already committed: never stranded in between, as before.
--
-- The alert page takes that path only for an alarm the center does not have yet, so its short
-- exclusive hold is rare.

DROP TRIGGER alarms_attach_site_answers ON alarms;
DROP FUNCTION attach_site_answers();

CREATE FUNCTION attach_site_answers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM added) THEN
        RETURN NULL;  -- ON CONFLICT updated them all: no new alarm, nothing waits for it
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1935765107, 0);
    WITH moved AS (
        DELETE FROM site_answers AS s USING added AS a WHERE s.alarm_id = a.alarm_id
        RETURNING s.*, a.incident_id, a.event
    )
    INSERT INTO timeline (incident_id, at, kind, actor, detail)
    SELECT m.incident_id, m.at, 'site_answer', site_contact_actor(m.contact, m.event),
           jsonb_build_object('answer', m.answer, 'alarm_id', m.alarm_id, 'contact', m.contact,
                              'lang', m.lang, 'before_alarm', true)
    FROM moved AS m ORDER BY m.answer_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER alarms_attach_site_answers AFTER INSERT ON alarms
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION attach_site_answers();
