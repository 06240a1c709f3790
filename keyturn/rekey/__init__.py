"""Master key rotation (seed 002): `keyturn rekey`.

    preflight  which master keys wrap what; a wrong or stale key fails before any write
    backup     a copy of the database before the first write (SQLite backup API, pg_dump)
    job        the batches: re-wrap data keys and the fingerprint key under the new master
               key; with `data_keys`, re-seal every version under fresh data keys

Progress is derived from the rows themselves (a data key whose master_key_id is the new key
is done; a version whose data key is not one of the keys being retired is done), so a
crashed run is resumed by running it again. A `meta` row (`rekey`) records which keys are
involved while the job is under way.
"""
