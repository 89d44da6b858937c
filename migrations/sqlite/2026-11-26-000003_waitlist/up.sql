-- A waitlist platform's place for the subscriber (ReferralLoop), and whether it removed them.
ALTER TABLE subscribers ADD COLUMN position BIGINT;
ALTER TABLE subscribers ADD COLUMN platform_removed BOOLEAN;
