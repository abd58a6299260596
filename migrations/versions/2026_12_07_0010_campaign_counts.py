"""campaign_counts: each campaign's messages counted by status, kept by triggers on messages

A campaign's progress was one GROUP BY over its messages: ~140 ms a call at 100,000, every
time a client polled. Now every statement that writes messages adds its net change per
(campaign, status, handed to Twilio) to campaign_count_deltas, in its own transaction (a
statement-level trigger with transition tables: one INSERT per statement, whatever its rows);
the campaign sweep folds the deltas into campaign_counts. A campaign's counts are its row of
totals plus its few deltas.

Revision ID: 0010_campaign_counts
Revises: 0009_sparse_indexes
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_campaign_counts"
down_revision: str | None = "0009_sparse_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each event's transition tables, and its rows as (campaign, status, handed to Twilio, +1 or
# -1). Updates that change none of the three net to nothing and write nothing.
_EVENTS = {
    "INSERT": (
        "NEW TABLE AS new_rows",
        "SELECT campaign_id, status, twilio_sid IS NOT NULL, 1 FROM new_rows",
    ),
    "DELETE": (
        "OLD TABLE AS old_rows",
        "SELECT campaign_id, status, twilio_sid IS NOT NULL, -1 FROM old_rows",
    ),
    "UPDATE": (
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT campaign_id, status, twilio_sid IS NOT NULL, -1 FROM old_rows "
        "UNION ALL SELECT campaign_id, status, twilio_sid IS NOT NULL, 1 FROM new_rows",
    ),
}


def upgrade() -> None:
    op.create_table(
        "campaign_counts",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at_twilio", sa.Boolean(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_counts_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "campaign_id", "status", "at_twilio", name=op.f("pk_campaign_counts")
        ),
    )
    op.create_table(
        "campaign_count_deltas",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at_twilio", sa.Boolean(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_campaign_count_deltas_campaign_id", "campaign_count_deltas", ["campaign_id"]
    )
    for event, (_, changes) in _EVENTS.items():
        name = f"campaign_counts_{event.lower()}"
        op.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO campaign_count_deltas (campaign_id, status, at_twilio, messages)
              SELECT campaign_id, status, at_twilio, sum(messages)
              FROM ({changes}) AS changes (campaign_id, status, at_twilio, messages)
              WHERE campaign_id IS NOT NULL
              GROUP BY campaign_id, status, at_twilio
              HAVING sum(messages) <> 0;
              RETURN NULL;
            END
            $$
            """  # noqa: S608 (our constants only)
        )
    # After any write to messages under way has ended, and before the next: every write from
    # then on counts. (Only these short statements hold the lock; a migration waiting for it
    # longer than 5 s gives up, rather than queue every send behind it: run it again.)
    op.execute("SET LOCAL lock_timeout = '5s'")
    for event, (tables, _) in _EVENTS.items():
        name = f"campaign_counts_{event.lower()}"
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON messages REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    # TRUNCATE has no rows to show: everything counted goes with them.
    op.execute(
        """
        CREATE FUNCTION campaign_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          DELETE FROM campaign_count_deltas;
          DELETE FROM campaign_counts;
          RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER campaign_counts_truncate AFTER TRUNCATE ON messages "
        "FOR EACH STATEMENT EXECUTE FUNCTION campaign_counts_truncate()"
    )
    op.execute("RESET lock_timeout")
    # The counts so far, after the triggers' commit and without holding writes back: one
    # statement, so one snapshot for both tables. The messages as they are in it, and out go
    # exactly the deltas of the writes it already shows; those committed after it stay, as
    # the changes they are.
    with op.get_context().autocommit_block():
        op.execute(
            "WITH shown AS (DELETE FROM campaign_count_deltas) "
            "INSERT INTO campaign_counts (campaign_id, status, at_twilio, messages) "
            "SELECT campaign_id, status, twilio_sid IS NOT NULL, count(*) FROM messages "
            "WHERE campaign_id IS NOT NULL GROUP BY campaign_id, status, twilio_sid IS NOT NULL"
        )


def downgrade() -> None:
    for event in [*_EVENTS, "TRUNCATE"]:
        name = f"campaign_counts_{event.lower()}"
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON messages")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index("ix_campaign_count_deltas_campaign_id", table_name="campaign_count_deltas")
    op.drop_table("campaign_count_deltas")
    op.drop_table("campaign_counts")
