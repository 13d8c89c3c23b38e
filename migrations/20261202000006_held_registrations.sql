-- A registration held back for a person (one that would replace a unit's
-- registration sent from the unit's own address, but came from elsewhere)
-- is credited to no unit; held_unit names the unit it would be credited
-- to, so that the unit shows as waiting for review.
ALTER TABLE registration ADD COLUMN held_unit TEXT;
