-- The catalogue: halls, categories, lectures (one row per occurrence), weekly series,
-- bookings with their waiting list, check-ins, publish keys, and the webhook outbox.
-- Times are Unix seconds (UTC). migrations/postgres/ holds the same schema in PostgreSQL's
-- dialect; keep the two in step.

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL,
    position INTEGER NOT NULL
);

INSERT INTO categories (slug, name_zh, name_en, position) VALUES
    ('theory', '理论宣讲', 'Theory', 1),
    ('education', '教育服务', 'Education', 2),
    ('culture', '文化服务', 'Culture', 3),
    ('science', '科技科普', 'Science', 4),
    ('fitness', '健身体育', 'Fitness', 5);

CREATE TABLE halls (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    town TEXT NOT NULL DEFAULT '',
    village TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    seats INTEGER CHECK (seats IS NULL OR seats >= 0),
    created_at INTEGER NOT NULL
);

-- Publish keys belong to the stream name: every occurrence of a series uses one stream.
-- publish_key NULL: open (a [[lecture]] in the file that gives no key).
CREATE TABLE streams (
    name TEXT PRIMARY KEY,
    publish_key TEXT,
    previous_key TEXT,
    previous_until INTEGER,
    from_config INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    speaker TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    category_id INTEGER REFERENCES categories(id),
    hall_id INTEGER REFERENCES halls(id),
    stream TEXT NOT NULL,
    dialects TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'booking', 'private')),
    seats INTEGER CHECK (seats IS NULL OR seats >= 0),
    weekday INTEGER NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes > 0),
    first_date TEXT NOT NULL,
    last_date TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per occurrence. seats NULL: no booking. seats_taken counts confirmed seat
-- bookings; the CHECK is the database's own guard against overbooking.
CREATE TABLE lectures (
    id INTEGER PRIMARY KEY,
    series_id INTEGER REFERENCES series(id),
    series_date TEXT,
    detached INTEGER NOT NULL DEFAULT 0,
    config_name TEXT UNIQUE,
    title TEXT NOT NULL,
    speaker TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    category_id INTEGER REFERENCES categories(id),
    hall_id INTEGER REFERENCES halls(id),
    stream TEXT NOT NULL,
    dialects TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'booking', 'private')),
    starts_at INTEGER,
    ends_at INTEGER,
    seats INTEGER CHECK (seats IS NULL OR seats >= 0),
    seats_taken INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    reminded_for INTEGER,
    live_at INTEGER,
    replay_at INTEGER,
    replay_url TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK (seats_taken >= 0 AND (seats IS NULL OR seats_taken <= seats)),
    UNIQUE (series_id, series_date)
);
CREATE INDEX lectures_by_start ON lectures (starts_at);
CREATE INDEX lectures_by_stream ON lectures (stream, starts_at);

-- Someone who books: `person` is the caller's identifier (the app's user id, a phone
-- number); feed_token opens their iCal feed.
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    person TEXT NOT NULL UNIQUE,
    feed_token TEXT NOT NULL UNIQUE,
    forgiven_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE bookings (
    id INTEGER PRIMARY KEY,
    lecture_id INTEGER NOT NULL REFERENCES lectures(id),
    person_id INTEGER NOT NULL REFERENCES people(id),
    kind TEXT NOT NULL CHECK (kind IN ('seat', 'online')),
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'waiting', 'cancelled')),
    name TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT '',
    ticket_code TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT,
    created_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    cancelled_at INTEGER,
    checked_in_at INTEGER
);
CREATE UNIQUE INDEX bookings_one_per_person ON bookings (lecture_id, person_id)
    WHERE status <> 'cancelled';
CREATE INDEX bookings_by_lecture ON bookings (lecture_id, status, id);
CREATE INDEX bookings_by_person ON bookings (person_id);

-- Every scan at the door, good or bad.
CREATE TABLE checkins (
    id INTEGER PRIMARY KEY,
    lecture_id INTEGER NOT NULL REFERENCES lectures(id),
    booking_id INTEGER REFERENCES bookings(id),
    result TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX checkins_by_lecture ON checkins (lecture_id);

-- Webhook events waiting to be delivered: written in the transaction that causes them,
-- so a restart loses none.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    delivered_at INTEGER,
    failed_at INTEGER,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
