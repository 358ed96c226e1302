using System.Diagnostics;
using Microsoft.Data.Sqlite;
using Motr.Bench.Macro;

namespace Motr.Bench.Peers;

/// <summary>
/// SQLite as the btree peer, through Microsoft.Data.Sqlite: one connection, journal_mode=WAL,
/// synchronous=NORMAL (commits are not synced, only checkpoints: not durable), a 1 GiB page cache (so
/// the table is in memory like the others), table <c>t(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID</c>.
/// Prepared statements; inserts and deletes 1000 rows per transaction, lookups in read transactions of
/// 1000, the scan is <c>SELECT k, v FROM t ORDER BY k</c>.
/// </summary>
internal sealed class SqliteKvPeer : KvStore
{
    public const string SystemName = "sqlite";
    public const int Batch = 1000;
    private const int CacheKiB = 1 << 20;

    private readonly SqliteConnection _conn;
    private readonly SqliteCommand _begin, _commit, _insert, _select, _delete, _scan, _update;
    private readonly byte[] _key = new byte[KeyStream.KeySize];
    private readonly byte[] _value = new byte[BTreeValues.ValueSize];

    private SqliteKvPeer(string folder)
    {
        var cs = new SqliteConnectionStringBuilder { DataSource = Path.Combine(folder, "bench.db"), Pooling = false, Mode = SqliteOpenMode.ReadWriteCreate };
        _conn = new SqliteConnection(cs.ToString());
        _conn.Open();
        string mode = (string)SqlitePeer.Scalar(_conn, "PRAGMA journal_mode=WAL")!;
        if (!mode.Equals("wal", StringComparison.OrdinalIgnoreCase)) throw new InvalidOperationException($"SQLite refused WAL mode (got {mode})");
        SqlitePeer.Scalar(_conn, "PRAGMA synchronous=NORMAL");
        if (SqlitePeer.Scalar(_conn, "PRAGMA synchronous") is not 1L) throw new InvalidOperationException("SQLite did not take synchronous=NORMAL");
        SqlitePeer.Scalar(_conn, $"PRAGMA cache_size=-{CacheKiB}");
        if (SqlitePeer.Scalar(_conn, "PRAGMA cache_size") is not long cache || cache != -CacheKiB) throw new InvalidOperationException($"SQLite did not take cache_size=-{CacheKiB}");
        SqlitePeer.Scalar(_conn, "CREATE TABLE t(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID");
        _begin = SqlitePeer.Prepare(_conn, "BEGIN");
        _commit = SqlitePeer.Prepare(_conn, "COMMIT");
        _insert = WithParameters("INSERT INTO t(k, v) VALUES ($k, $v)", value: true);
        _select = WithParameters("SELECT v FROM t WHERE k = $k", value: false);
        _delete = WithParameters("DELETE FROM t WHERE k = $k", value: false);
        _scan = SqlitePeer.Prepare(_conn, "SELECT k, v FROM t ORDER BY k");
        _update = WithParameters("UPDATE t SET v = $v WHERE k = $k", value: true);
    }

    public override string System => SystemName;

    public override int Writers(string workload) => 1;

    public static SqliteKvPeer Open(string folder) => new(folder);

    public override Task<KvStore> OpenWarmUpAsync(string folder) => Task.FromResult<KvStore>(Open(folder));

    private SqliteCommand WithParameters(string sql, bool value)
    {
        var c = _conn.CreateCommand();
        c.CommandText = sql;
        c.Parameters.Add("$k", SqliteType.Blob, KeyStream.KeySize).Value = _key;
        if (value) c.Parameters.Add("$v", SqliteType.Blob, BTreeValues.ValueSize).Value = _value;
        c.Prepare();
        return c;
    }

    public override Task<PhaseRun> InsertAsync(KeySet keys) => Task.Run(() => Write(keys.Insert, _insert, "INSERT"));

    public override Task<PhaseRun> DeleteAsync(KeySet keys) => Task.Run(() => Write(keys.Delete, _delete, "DELETE"));

    public override Task<PhaseRun> LookupAsync(KeySet keys) => Task.Run(() => Lookup(keys.Lookup));

    public override Task<PhaseRun> ScanAsync(KeySet keys, TimeSpan atLeast) => Task.Run(() => TimedScan(SystemName, keys.Count, atLeast, ScanPass));

    private PhaseRun Write(KeyStream keys, SqliteCommand command, string what)
    {
        var run = new PhaseRun { LatencyWhat = $"one prepared {what}, every op; the ops beginning and ending a {Batch}-row transaction include BEGIN / COMMIT" };
        int n = keys.Count;
        bool insert = command == _insert;
        long start = Stopwatch.GetTimestamp(), prev = start;
        bool open = false;
        try
        {
            for (int i = 0; i < n; i++)
            {
                if (i % Batch == 0)
                {
                    _begin.ExecuteNonQuery();
                    open = true;
                }
                var key = keys.Key(i);
                key.CopyTo(_key);
                if (insert) BTreeValues.Fill(key, _value);
                int rows = command.ExecuteNonQuery();
                if (rows != 1) throw new InvalidOperationException($"sqlite: {what} changed {rows} rows, expected 1");
                if (i % Batch == Batch - 1 || i == n - 1)
                {
                    open = false;
                    _commit.ExecuteNonQuery();
                }
                long now = Stopwatch.GetTimestamp();
                run.Latency.Record(now - prev);
                prev = now;
            }
        }
        finally
        {
            if (open) SqlitePeer.Scalar(_conn, "ROLLBACK");
        }
        run.Ticks = prev - start;
        run.Ops = n;
        return run;
    }

    private PhaseRun Lookup(KeyStream keys)
    {
        var run = new PhaseRun { LatencyWhat = $"one prepared SELECT (ExecuteReader, Read, GetFieldValue<byte[]>), every {LookupSampleEvery}th op; read transactions of {Batch} lookups" };
        int n = keys.Count;
        var scratch = new byte[BTreeValues.ValueSize];
        long missing = 0, wrong = 0;
        byte sink = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < n; i++)
        {
            if (i % Batch == 0)
            {
                if (i > 0) _commit.ExecuteNonQuery();
                _begin.ExecuteNonQuery();
            }
            var key = keys.Key(i);
            key.CopyTo(_key);
            bool sampled = i % LookupSampleEvery == 0;
            long t0 = sampled ? Stopwatch.GetTimestamp() : 0;
            byte[]? value = null;
            using (var reader = _select.ExecuteReader())
                if (reader.Read()) value = reader.GetFieldValue<byte[]>(0);
            if (sampled)
            {
                run.Latency.Record(Stopwatch.GetTimestamp() - t0);
                if (value is not null && !BTreeValues.Matches(key, value, scratch)) wrong++;
            }
            if (value is null) missing++;
            else sink ^= value[0];
        }
        _commit.ExecuteNonQuery();
        run.Ticks = Stopwatch.GetTimestamp() - start;
        if (missing + wrong > 0) throw new InvalidOperationException($"sqlite: lookups found {missing:N0} keys missing and {wrong:N0} wrong values");
        CheckLookupSink(SystemName, keys, sink);
        run.Ops = n;
        Sink ^= sink;
        return run;
    }

    private (long Records, long OutOfOrder, long Wrong, ulong Sink) ScanPass(bool verify)
    {
        long records = 0, outOfOrder = 0, wrong = 0;
        ulong sink = 0;
        var last = new byte[KeyStream.KeySize];
        var scratch = verify ? new byte[BTreeValues.ValueSize] : [];
        using var reader = _scan.ExecuteReader();
        while (reader.Read())
        {
            var key = reader.GetFieldValue<byte[]>(0);
            var value = reader.GetFieldValue<byte[]>(1);
            if (verify)
            {
                if (records > 0 && key.AsSpan().SequenceCompareTo(last) <= 0) outOfOrder++;
                if (!BTreeValues.Matches(key, value, scratch)) wrong++;
                key.CopyTo(last, 0);
            }
            else sink ^= BitConverter.ToUInt64(key) ^ value[0];
            records++;
        }
        return (records, outOfOrder, wrong, sink);
    }

    public override Task VerifyAsync(KeySet keys, bool empty) => Task.Run(() =>
    {
        long count = (long)SqlitePeer.Scalar(_conn, "SELECT count(*) FROM t")!;
        if (empty)
        {
            CheckEmpty(SystemName, "after deleting every key", count, SqlitePeer.Scalar(_conn, "SELECT k FROM t LIMIT 1") is not null);
            return;
        }
        var scratch = new byte[BTreeValues.ValueSize];
        long missing = 0, wrong = 0;
        var stream = keys.Insert;
        _begin.ExecuteNonQuery();
        try
        {
            for (int i = 0; i < stream.Count; i++)
            {
                var key = stream.Key(i);
                key.CopyTo(_key);
                using var reader = _select.ExecuteReader();
                if (!reader.Read()) missing++;
                else if (!BTreeValues.Matches(key, reader.GetFieldValue<byte[]>(0), scratch)) wrong++;
            }
        }
        finally { _commit.ExecuteNonQuery(); }
        CheckVerified(SystemName, "after the insert", count, stream.Count, missing, wrong);
    });

    public override Task SabotageAsync(KeySet keys, Sabotage what) => Task.Run(() =>
    {
        var key = what == Sabotage.ExtraKey ? ExtraKey : keys.Insert.Key(keys.Count / 2).ToArray();
        key.CopyTo(_key, 0);
        if (what == Sabotage.WrongValue) WrongValueOf(key).CopyTo(_value, 0);
        else BTreeValues.Fill(key, _value);
        int rows = (what == Sabotage.DropKey ? _delete : what == Sabotage.WrongValue ? _update : _insert).ExecuteNonQuery();
        if (rows != 1) throw new InvalidOperationException($"sqlite: sabotage {what} changed {rows} rows");
    });

    public override Task AfterAsync(string workload, KeySet keys, PhaseRun run)
    {
        if (workload != BTreeBench.Insert) return Task.CompletedTask;
        long pages = (long)SqlitePeer.Scalar(_conn, "PRAGMA page_count")!;
        long pageSize = (long)SqlitePeer.Scalar(_conn, "PRAGMA page_size")!;
        double perKey = (double)(pages * pageSize) / Math.Max(1, keys.Count);
        run.Extra["storage_bytes_per_key"] = perKey;
        run.Notes.Add($"storage after insert: {pages * pageSize / (double)(1 << 20):N1} MiB in {pages:N0} pages of {pageSize} B: {perKey:N1} B per key " +
            $"(key + value: {KeyStream.KeySize + BTreeValues.ValueSize} B)");
        run.Notes.Add($"SQLite {_conn.ServerVersion}, journal_mode=WAL, synchronous=NORMAL (commits are not synced: not durable), cache_size {CacheKiB >> 10} MiB, WITHOUT ROWID");
        return Task.CompletedTask;
    }

    public override ValueTask DisposeAsync()
    {
        foreach (var c in (SqliteCommand[])[_begin, _commit, _insert, _select, _delete, _scan, _update]) c.Dispose();
        _conn.Dispose();
        return ValueTask.CompletedTask;
    }
}
