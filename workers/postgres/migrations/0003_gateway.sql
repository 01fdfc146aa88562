-- The HTTP gateway's state: service API keys and the answers to idempotent requests.

-- A key is shown once, at creation; only the SHA-256 of its secret part is kept.  The secret is
-- 32 random bytes, so a fast hash is enough (a slow one guards guessable passwords, not these).
CREATE TABLE feedbackflow.api_keys (
    key_id       text        PRIMARY KEY,
    name         text        NOT NULL,
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL
        CHECK (scopes <@ ARRAY['predictions', 'feedback', 'admin']::text[] AND cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- A request sent with an Idempotency-Key: the events it admitted, exactly as published, and the
-- answer given.  A retry publishes the same bytes again (the worker stores an event id once) and
-- gets the same answer.  Small and short-lived: the gateway deletes rows past their time.
CREATE TABLE feedbackflow.idempotent_requests (
    caller          text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_sha256  bytea       NOT NULL,
    status          integer     NOT NULL,
    answer          jsonb       NOT NULL,
    events          jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, idempotency_key)
);
CREATE INDEX idempotent_requests_created ON feedbackflow.idempotent_requests (created_at);

-- Dashboards have no business with key hashes or request bodies.
REVOKE ALL ON feedbackflow.api_keys, feedbackflow.idempotent_requests FROM feedbackflow_reader;
