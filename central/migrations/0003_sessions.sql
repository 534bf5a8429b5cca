-- Console sessions in the shared database, so that a browser behind a load balancer is logged in
-- at every instance (a session kept in one instance's memory would be a 401 at the next). Only a
-- SHA-256 of the session id is kept, like API tokens: a copied database opens no session.
CREATE TABLE sessions (
    session_sha256 text PRIMARY KEY,
    name           text NOT NULL REFERENCES users ON DELETE CASCADE,
    csrf           text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
