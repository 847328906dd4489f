-- The submit service's server events are appended, not counted in place (DESIGN §5): every
-- code issued or claimed by one label on one day used to update the same row of `events` (and
-- every claim the same row of `otk_life_duration`) inside its request's transaction, so the
-- requests of a busy portal queued on that row's lock until each commit was flushed. A request
-- now inserts a row of its own into a log, which no other request ever waits for; a running
-- replica folds the log into the daily tables every minute (one statement per table that
-- deletes the rows it adds), and the events API adds the rows not folded yet. A release
-- before this one keeps writing and reading the daily tables: during a rolling release both
-- kinds of rows are counted, and after a rollback to it the log waits, complete, for the next
-- roll-forward.
CREATE TABLE event_log (
    identifier TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    date       DATE    NOT NULL,
    count      INTEGER NOT NULL CHECK (count > 0)
);

CREATE TABLE otk_life_duration_log (
    originator TEXT    NOT NULL,
    date       DATE    NOT NULL,
    hours      INTEGER NOT NULL CHECK (hours >= 0)
);

-- submit: appends, reads them for the events API, and folds them (DELETE ... RETURNING) into
-- `events` and `otk_life_duration`, on which it already holds SELECT, INSERT, UPDATE.
GRANT SELECT, INSERT, DELETE ON event_log, otk_life_duration_log TO diagnosis_submit;
