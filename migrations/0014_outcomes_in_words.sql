-- What a person needs to read a step's outcome and an approval without the playbook at hand.

-- Whether the playbook accepts the step's exit status, and its reason for a non-zero one
-- ("nothing was mounted"). NULL for attempts recorded before this migration (and for steps
-- that have no exit status).
ALTER TABLE step_attempts ADD COLUMN exit_accepted INTEGER;
ALTER TABLE step_attempts ADD COLUMN exit_reason TEXT;

-- What an approval would do, action by action: JSON [{step, host, command, changes}], host and
-- changes null where they do not apply. NULL for approvals asked before this migration.
ALTER TABLE approvals ADD COLUMN actions TEXT;
