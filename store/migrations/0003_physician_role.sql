-- 0003: the reading physician, who signs reports (DiagnosticReport final, SR in the study).
ALTER TABLE accounts DROP CONSTRAINT accounts_role_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_role_check CHECK (role IN ('platform-admin', 'tenant-admin', 'sonographer', 'bedside', 'physician'));
