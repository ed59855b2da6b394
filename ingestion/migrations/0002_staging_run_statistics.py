from django.db import migrations

# Every per-batch statement picks its rows with `run_id = R AND position BETWEEN ...`.
# Once ANALYZE has seen staging rows of an earlier run, a new run's id looks absent
# (estimated at one row), the planner takes the run_id-only index and filters on
# position, and each batch costs more than the last: measured on 1M records, 495 s
# instead of 157 s. Without statistics on run_id the planner uses (run, position).
# The same-type ALTER drops the statistic already gathered; ANALYZE alone would keep it.


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0001_initial")]

    operations = [
        migrations.RunSQL(
            [
                "ALTER TABLE ingestion_stagedcustomer ALTER COLUMN run_id SET STATISTICS 0",
                "ALTER TABLE ingestion_stagedcustomer ALTER COLUMN run_id TYPE bigint",
            ],
            reverse_sql="ALTER TABLE ingestion_stagedcustomer ALTER COLUMN run_id SET STATISTICS -1",
        ),
    ]
