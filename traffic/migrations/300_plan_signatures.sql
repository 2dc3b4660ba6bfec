-- Signatures of dispatched plans (traffic.security.audit).
-- One row per signed publication: a plan re-sent with a new expiry carries a new
-- signature, and each is kept, so the audit can prove exactly what went on the wire.
CREATE TABLE IF NOT EXISTS plan_signatures (
    id              bigserial   PRIMARY KEY,
    plan_id         text        NOT NULL,
    controller_id   text        NOT NULL,
    version         integer     NOT NULL,
    key_id          text        NOT NULL,            -- first 16 hex of SHA-256 over the Ed25519 public key
    signature       text        NOT NULL,            -- ed25519:<key id>:<base64url>
    fingerprint     text        NOT NULL,            -- SHA-256 hex of the signature text
    payload_sha256  text        NOT NULL,            -- SHA-256 hex of the signed canonical bytes
    signed_payload  text        NOT NULL,            -- those bytes (canonical JSON without the signature)
    expires_at      timestamptz,
    dispatched_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plan_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS plan_signatures_plan_idx ON plan_signatures (plan_id, dispatched_at);
CREATE INDEX IF NOT EXISTS plan_signatures_controller_idx ON plan_signatures (controller_id, dispatched_at);
