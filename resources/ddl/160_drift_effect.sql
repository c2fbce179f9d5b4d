-- Drift without false alarms (issue 25): each batch's effect size (mean shift beyond chance as
-- a fraction of the reference's spread, in `effect_size`, added by 140) and its Holm-adjusted
-- p-value over the batches tested together; 140's `alpha` column was never written.
ALTER TABLE batch_drift ADD COLUMN IF NOT EXISTS p_holm DOUBLE;
ALTER TABLE batch_drift DROP COLUMN IF EXISTS alpha;
