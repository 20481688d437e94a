-- 008: pacsnodectl verify --repair marks an instance whose file it found
-- missing (the row stays: the instance was acknowledged; what became of its
-- file is for the operator to settle, and queries may say NEARLINE).
ALTER TABLE instance ADD COLUMN missing_since timestamptz;
COMMENT ON COLUMN instance.missing_since IS 'Set by pacsnodectl verify --repair when the file was not found';
