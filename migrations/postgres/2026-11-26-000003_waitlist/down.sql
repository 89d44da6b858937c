ALTER TABLE subscribers DROP COLUMN platform_removed;
ALTER TABLE subscribers DROP COLUMN position;
