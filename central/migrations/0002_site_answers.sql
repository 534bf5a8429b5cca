-- Answers from the alert page (/a/{token}, central/alert_page.py) that came before the center
-- had the alarm: the SMS never waits for the center, so the people at the site may answer first.
-- They wait here, keyed by alarm id, and the alarm's first insert moves them onto its incident's
-- timeline in the same transaction (trigger below): no other code needs to know.

CREATE TABLE site_answers (
    answer_id  bigserial PRIMARY KEY,
    alarm_id   text NOT NULL,
    contact    integer NOT NULL,     -- the contact's index in the alarm event's site.contacts
    lang       text NOT NULL,
    answer     text NOT NULL CHECK (answer IN ('left', 'false_alarm', 'call_me', 'need_help')),
    at         timestamptz NOT NULL  -- center clock
);
CREATE INDEX site_answers_alarm ON site_answers (alarm_id);

-- The actor of a site answer on the timeline: "site contact #N" (1-based, the order of the
-- event's site.contacts) and the contact's name when the event has it. Never a phone number.
CREATE FUNCTION site_contact_actor(contact integer, event jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'site contact #' || (contact + 1)
        || coalesce(' ' || nullif(event -> 'site' -> 'contacts' -> contact ->> 'name', ''), '')
$$;

-- The lock class of alert page answers ("sans"; two-key advisory locks are apart from every one-key lock).
-- The alert page takes the same lock before it decides "not at the center yet", so an answer is
-- either seen here or finds the alarm already committed: never stranded in between.
CREATE FUNCTION attach_site_answers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1935765107, hashtext(NEW.alarm_id));
    WITH moved AS (
        DELETE FROM site_answers WHERE alarm_id = NEW.alarm_id RETURNING *
    )
    INSERT INTO timeline (incident_id, at, kind, actor, detail)
    SELECT NEW.incident_id, m.at, 'site_answer', site_contact_actor(m.contact, NEW.event),
           jsonb_build_object('answer', m.answer, 'alarm_id', m.alarm_id, 'contact', m.contact,
                              'lang', m.lang, 'before_alarm', true)
    FROM moved AS m ORDER BY m.answer_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER alarms_attach_site_answers AFTER INSERT ON alarms
    FOR EACH ROW EXECUTE FUNCTION attach_site_answers();
