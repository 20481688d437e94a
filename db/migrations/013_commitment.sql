-- 013: Storage Commitment Push Model (PS3.4 Annex J; docs/storage-commitment.md).
-- A request (N-ACTION-RQ) is one commitment row and one commitment_item row
-- per Referenced SOP Sequence item, written before the N-ACTION-RSP says
-- 0x0000. The result (event_type and each item's failure_reason) is filled
-- in once computed from the index and the files; the report
-- (N-EVENT-REPORT-RQ) is then owed until state is 'done' (delivered) or
-- 'expired' (the peer could not be reached for [commitment] retry_for).
-- A sender claims a due row by moving its next_attempt_at past the time a
-- delivery may take (FOR UPDATE SKIP LOCKED: two nodes never take the same
-- row), so that a sender that dies mid-delivery leaves the row due again.
CREATE TABLE commitment (
	pk              bigserial PRIMARY KEY,
	transaction_uid text COLLATE "C" NOT NULL UNIQUE,
	calling_ae      text COLLATE "C" NOT NULL,
	state           text COLLATE "C" NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'expired')),
	event_type      smallint CHECK (event_type IN (1, 2)),
	attempts        integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	created_at      timestamptz NOT NULL DEFAULT now(),
	finished_at     timestamptz,
	last_error      text
);
COMMENT ON TABLE commitment IS 'Storage commitment requests (N-ACTION-RQ) and the state of their report (N-EVENT-REPORT-RQ)';
COMMENT ON COLUMN commitment.transaction_uid IS '(0008,1195) TransactionUID of the request';
COMMENT ON COLUMN commitment.calling_ae IS 'The requesting AE title: the report goes to the [peer.*] with it';
COMMENT ON COLUMN commitment.state IS 'pending: report owed; done: delivered; expired: not delivered within [commitment] retry_for';
COMMENT ON COLUMN commitment.event_type IS '1: all committed, 2: some failed; NULL: result not computed yet';
COMMENT ON COLUMN commitment.attempts IS 'Deliveries of the report tried so far';
COMMENT ON COLUMN commitment.next_attempt_at IS 'When the report is next due (moved forward by a claim and by a failed attempt)';
COMMENT ON COLUMN commitment.finished_at IS 'When it became done or expired';
COMMENT ON COLUMN commitment.last_error IS 'Why the last failed delivery failed (kept once done)';

CREATE INDEX commitment_due_idx ON commitment (next_attempt_at) WHERE state = 'pending';

CREATE TABLE commitment_item (
	commitment_fk  bigint NOT NULL REFERENCES commitment (pk) ON DELETE CASCADE,
	ord            integer NOT NULL,
	sop_class_uid  text COLLATE "C" NOT NULL,
	sop_uid        text COLLATE "C" NOT NULL,
	failure_reason integer,
	PRIMARY KEY (commitment_fk, ord)
);
COMMENT ON TABLE commitment_item IS 'The Referenced SOP Sequence (0008,1199) of a storage commitment request, in order';
COMMENT ON COLUMN commitment_item.sop_class_uid IS '(0008,1150) ReferencedSOPClassUID as requested';
COMMENT ON COLUMN commitment_item.sop_uid IS '(0008,1155) ReferencedSOPInstanceUID as requested';
COMMENT ON COLUMN commitment_item.failure_reason IS '(0008,1197) FailureReason; NULL: committed (once the request has an event_type)';
