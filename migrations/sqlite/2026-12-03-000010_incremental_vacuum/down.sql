PRAGMA auto_vacuum = NONE;
VACUUM;
