-- Operator accounts for the console (/admin): argon2id password hashes (PHC strings), and
-- sessions stored by the SHA-256 of their random cookie id (the cookie itself is never
-- stored), each with its CSRF token. migrations/postgres/ holds the same in PostgreSQL's
-- dialect; keep the two in step.

CREATE TABLE operators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE operator_sessions (
    id_hash TEXT PRIMARY KEY,
    operator_id INTEGER NOT NULL REFERENCES operators(id),
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX operator_sessions_by_expiry ON operator_sessions (expires_at);
