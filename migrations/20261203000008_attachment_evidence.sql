-- What a scan says about where it came from, for the office to see beside
-- the file: whether a red official seal (公章) was found on a colour page
-- (NULL: not a colour scan, or recorded before this column), and the
-- sending number of a fax header line read by OCR.
ALTER TABLE attachment ADD COLUMN red_seal INTEGER;
ALTER TABLE attachment ADD COLUMN fax_from TEXT;
