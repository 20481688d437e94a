-- 018: the nodes that share this index (docs/scale.md, "Several nodes").
-- A node's [node] node_id gets a number here the first time it starts;
-- the number, not the text, keys its advisory locks: the node lock
-- (classid "PNN1", objid num: shared by every session of the running
-- node, taken exclusively by whoever settles its temporary files) and its
-- workers' locks (classid "PW" * 65536 + num, objid the process id). A
-- number is exact where a hash of the text could make two ids collide.
CREATE TABLE node (
	num integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id text NOT NULL UNIQUE CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
	first_started timestamptz NOT NULL DEFAULT now(),
	last_started timestamptz NOT NULL DEFAULT now()
);
