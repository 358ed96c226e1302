using System.Diagnostics;
using Microsoft.Data.Sqlite;

namespace Motr.Bench.Peers;

/// <summary>
/// SQLite as the tx peer: one connection (SQLite has one writer), journal_mode=WAL, synchronous=FULL
/// (the WAL is synced at every commit), prepared BEGIN / INSERT / COMMIT. A transaction inserts
/// <c>rows</c> 100-byte rows with rowid keys (appends: SQLite's best case).
/// </summary>
internal static class SqlitePeer
{
    public const string SystemName = "sqlite-full";
    public const int ValueSize = 100;

    /// <summary>Runs the tx workload for <paramref name="warmup"/> then measures for <paramref name="duration"/>. Latency is BEGIN to COMMIT returned.</summary>
    public static BenchResult RunTx(string workload, int rows, BenchDirectory dir, TimeSpan warmup, TimeSpan duration)
    {
        string folder = dir.Sub($"sqlite-{workload}");
        try
        {
            var cs = new SqliteConnectionStringBuilder { DataSource = Path.Combine(folder, "bench.db"), Pooling = false, Mode = SqliteOpenMode.ReadWriteCreate };
            using var conn = new SqliteConnection(cs.ToString());
            conn.Open();
            string mode = (string)Scalar(conn, "PRAGMA journal_mode=WAL")!;
            if (!mode.Equals("wal", StringComparison.OrdinalIgnoreCase)) throw new InvalidOperationException($"SQLite refused WAL mode (got {mode})");
            Scalar(conn, "PRAGMA synchronous=FULL");
            if (Scalar(conn, "PRAGMA synchronous") is not 2L) throw new InvalidOperationException("SQLite did not take synchronous=FULL");
            Scalar(conn, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB NOT NULL)");

            using var begin = Prepare(conn, "BEGIN");
            using var commit = Prepare(conn, "COMMIT");
            using var insert = Prepare(conn, "INSERT INTO t(v) VALUES ($v)");
            var value = new byte[ValueSize];
            Random.Shared.NextBytes(value);
            var p = insert.Parameters.Add("$v", SqliteType.Blob, ValueSize);
            p.Value = value;
            insert.Prepare();

            var latency = new LatencyHistogram();
            var (warmOps, _) = Loop(warmup, null);
            long alloc0 = GC.GetTotalAllocatedBytes(precise: true);
            var (ops, ticks) = Loop(duration, latency);
            long alloc1 = GC.GetTotalAllocatedBytes(precise: true);
            double secs = ticks / (double)Stopwatch.Frequency;
            long rowCount = (long)Scalar(conn, "SELECT count(*) FROM t")!;
            // outside the window: every committed transaction's rows are there
            if (rowCount != (warmOps + ops) * rows)
                throw new InvalidOperationException($"sqlite-full: {rowCount:N0} rows after {warmOps + ops:N0} transactions of {rows} row(s), expected {(warmOps + ops) * rows:N0}");

            return new BenchResult
            {
                Workload = workload,
                System = SystemName,
                OpsPerSec = ops / secs,
                P50Us = latency.PercentileMicros(0.5),
                P99Us = latency.PercentileMicros(0.99),
                Ops = ops,
                Seconds = secs,
                Writers = 1,
                AllocBytesPerOp = ops > 0 ? (alloc1 - alloc0) / (double)ops : double.NaN,
                Notes =
                [
                    $"latency BEGIN->COMMIT: p50 {latency.PercentileMicros(0.5):N1} us, p90 {latency.PercentileMicros(0.9):N1}, p99 {latency.PercentileMicros(0.99):N1}, " +
                        $"p99.9 {latency.PercentileMicros(0.999):N1}, max {LatencyHistogram.TicksToMicros(latency.MaxTicks):N1}",
                    $"{rows} row(s) of {ValueSize} B per tx, {rowCount:N0} rows at the end; SQLite {conn.ServerVersion}, journal_mode=WAL, synchronous=FULL",
                ],
            };

            (long Ops, long Ticks) Loop(TimeSpan length, LatencyHistogram? record)
            {
                long start = Stopwatch.GetTimestamp();
                long end = start + (long)(length.TotalSeconds * Stopwatch.Frequency);
                long n = 0, now = start;
                while (now < end)
                {
                    begin.ExecuteNonQuery();
                    for (int r = 0; r < rows; r++)
                    {
                        value[r] ^= (byte)n;
                        insert.ExecuteNonQuery();
                    }
                    commit.ExecuteNonQuery();
                    long t = Stopwatch.GetTimestamp();
                    record?.Record(t - now);
                    now = t;
                    n++;
                }
                return (n, now - start);
            }
        }
        finally
        {
            BenchDirectory.Remove(folder);
        }
    }

    internal static SqliteCommand Prepare(SqliteConnection conn, string sql)
    {
        var c = conn.CreateCommand();
        c.CommandText = sql;
        c.Prepare();
        return c;
    }

    internal static object? Scalar(SqliteConnection conn, string sql)
    {
        using var c = conn.CreateCommand();
        c.CommandText = sql;
        return c.ExecuteScalar();
    }
}
