-- Pages freed by pruning go back to the file's free list, and `PRAGMA incremental_vacuum`
-- (run after each pruning pass) gives them back to the file system. An existing file takes the
-- setting only through a VACUUM, which rewrites it (and cannot run inside a transaction).
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
