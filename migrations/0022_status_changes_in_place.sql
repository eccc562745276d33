-- A lifecycle command rewrites the VM's list row in place.
--
-- Every lifecycle verb changes the VM's status (`stopped` -> `starting`, ...). With `status` in an
-- index (0004's `vms_status`), PostgreSQL cannot update such a row in place (a "HOT" update on
-- the same page): it writes a new row version plus a new entry in each of the table's four
-- indexes. Without it, the row is updated in place whenever its page has room, which it mostly
-- has (old versions are pruned as pages are visited): pgbench writing a start's rows (event, job,
-- list row) at 64 connections committed 9% more per second without the index, with 97% of the
-- list row updates in place against none, and 11% less WAL per start (one run each way on the
-- project's 2-core machine).
--
-- What the index served: the list filtered by status (`GET /vms?status=`, whose count scans the
-- matching rows anyway and whose page is read newest first through `vms_created` or
-- `vms_owner`), the usage sampler's list of running VMs every few seconds and reconciliation's
-- once at start (a scan of the list: a few milliseconds for 8,192 VMs).

DROP INDEX vms_status;
