using System.Diagnostics;
using Motr.Bench.Macro;
using static Motr.Bench.Peers.LmdbNative;

namespace Motr.Bench.Peers;

/// <summary>
/// LMDB as the btree peer, through P/Invoke to Debian's liblmdb.so.0: one environment opened with
/// MDB_NOSYNC (a commit does not sync: not durable, unlike motr), the unnamed database, one writer.
/// Inserts and deletes run 1000 per write transaction; lookups in read transactions of 1000 gets
/// (reset and renewed); the scan with a cursor in a read transaction.
/// </summary>
internal sealed unsafe class LmdbPeer : KvStore
{
    public const string SystemName = "lmdb";
    public const int Batch = 1000;
    public const string MissingMessage = $"lmdb: {Library} not found: install liblmdb0 (apt-get install -y liblmdb0; bench/bench.sh does it)";

    private nint _env;
    private readonly uint _dbi;
    private readonly long _mapSize;

    private LmdbPeer(nint env, uint dbi, long mapSize)
    {
        _env = env;
        _dbi = dbi;
        _mapSize = mapSize;
    }

    public override string System => SystemName;

    public override int Writers(string workload) => 1;

    /// <summary>Opens a new environment in <paramref name="folder"/> whose map holds <paramref name="keys"/> keys with room to spare (at least 4 GiB; only address space).</summary>
    public static LmdbPeer Open(string folder, int keys)
    {
        if (!IsAvailable()) throw new InvalidOperationException(MissingMessage);
        long mapSize = Math.Max(4L << 30, (long)keys * 1024);
        Check(mdb_env_create(out nint env), "mdb_env_create");
        try
        {
            Check(mdb_env_set_mapsize(env, (nuint)mapSize), "mdb_env_set_mapsize");
            Check(mdb_env_open(env, folder, MDB_NOSYNC, 0b110_100_100), "mdb_env_open");
            // What README and docs/performance.md say of this peer, read back from the environment: MDB_NOSYNC (commits
            // not synced) and none of the flags that would make it do less still (no meta sync, a writable map).
            Check(mdb_env_get_flags(env, out uint flags), "mdb_env_get_flags");
            if ((flags & MDB_NOSYNC) == 0 || (flags & (MDB_NOMETASYNC | MDB_WRITEMAP)) != 0)
                throw new InvalidOperationException($"lmdb: the environment's flags are 0x{flags:X}, expected MDB_NOSYNC without MDB_NOMETASYNC or MDB_WRITEMAP");
            Check(mdb_txn_begin(env, 0, 0, out nint txn), "mdb_txn_begin");
            int rc = mdb_dbi_open(txn, null, MDB_CREATE, out uint dbi);
            if (rc != 0) mdb_txn_abort(txn);
            Check(rc, "mdb_dbi_open");
            Check(mdb_txn_commit(txn), "mdb_txn_commit");
            return new LmdbPeer(env, dbi, mapSize);
        }
        catch
        {
            mdb_env_close(env);
            throw;
        }
    }

    public override Task<KvStore> OpenWarmUpAsync(string folder) => Task.FromResult<KvStore>(Open(folder, 0));

    public override Task<PhaseRun> InsertAsync(KeySet keys) => Task.Run(() => Write(keys.Insert, insert: true));

    public override Task<PhaseRun> DeleteAsync(KeySet keys) => Task.Run(() => Write(keys.Delete, insert: false));

    public override Task<PhaseRun> LookupAsync(KeySet keys) => Task.Run(() => Lookup(keys.Lookup));

    public override Task<PhaseRun> ScanAsync(KeySet keys, TimeSpan atLeast) => Task.Run(() => TimedScan(SystemName, keys.Count, atLeast, ScanPass));

    private PhaseRun Write(KeyStream keys, bool insert)
    {
        var run = new PhaseRun { LatencyWhat = $"one mdb_{(insert ? "put" : "del")}, every op; the ops beginning and ending a {Batch}-op write txn include mdb_txn_begin / mdb_txn_commit" };
        int n = keys.Count;
        byte* value = stackalloc byte[BTreeValues.ValueSize];
        var valueSpan = new Span<byte>(value, BTreeValues.ValueSize);
        nint txn = 0;
        fixed (byte* kp = keys.Bytes)
        {
            long start = Stopwatch.GetTimestamp(), prev = start;
            try
            {
                for (int i = 0; i < n; i++)
                {
                    if (i % Batch == 0) Check(mdb_txn_begin(_env, 0, 0, out txn), "mdb_txn_begin");
                    var k = new MdbVal { Size = KeyStream.KeySize, Data = kp + (long)i * KeyStream.KeySize };
                    int rc;
                    if (insert)
                    {
                        BTreeValues.Fill(new ReadOnlySpan<byte>(k.Data, KeyStream.KeySize), valueSpan);
                        var v = new MdbVal { Size = BTreeValues.ValueSize, Data = value };
                        rc = mdb_put(txn, _dbi, &k, &v, MDB_NOOVERWRITE);
                    }
                    else rc = mdb_del(txn, _dbi, &k, null);
                    Check(rc, insert ? "mdb_put" : "mdb_del");
                    if (i % Batch == Batch - 1 || i == n - 1)
                    {
                        nint t = txn;
                        txn = 0;
                        Check(mdb_txn_commit(t), "mdb_txn_commit");
                    }
                    long now = Stopwatch.GetTimestamp();
                    run.Latency.Record(now - prev);
                    prev = now;
                }
            }
            finally
            {
                if (txn != 0) mdb_txn_abort(txn);
            }
            run.Ticks = prev - start;
        }
        run.Ops = n;
        return run;
    }

    private PhaseRun Lookup(KeyStream keys)
    {
        var run = new PhaseRun { LatencyWhat = $"one mdb_get, every {LookupSampleEvery}th op; read txns of {Batch} gets (reset and renewed)" };
        int n = keys.Count;
        Span<byte> scratch = stackalloc byte[BTreeValues.ValueSize];
        long missing = 0, wrong = 0;
        byte sink = 0;
        Check(mdb_txn_begin(_env, 0, MDB_RDONLY, out nint txn), "mdb_txn_begin");
        try
        {
            fixed (byte* kp = keys.Bytes)
            {
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < n; i++)
                {
                    if (i % Batch == 0 && i > 0)
                    {
                        mdb_txn_reset(txn);
                        Check(mdb_txn_renew(txn), "mdb_txn_renew");
                    }
                    var k = new MdbVal { Size = KeyStream.KeySize, Data = kp + (long)i * KeyStream.KeySize };
                    MdbVal v;
                    int rc;
                    if (i % LookupSampleEvery == 0)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        rc = mdb_get(txn, _dbi, &k, &v);
                        run.Latency.Record(Stopwatch.GetTimestamp() - t0);
                        if (rc == 0 && !BTreeValues.Matches(new ReadOnlySpan<byte>(k.Data, KeyStream.KeySize), new ReadOnlySpan<byte>(v.Data, (int)v.Size), scratch)) wrong++;
                    }
                    else rc = mdb_get(txn, _dbi, &k, &v);
                    if (rc == 0) sink ^= v.Data[0];
                    else if (rc == MDB_NOTFOUND) missing++;
                    else Check(rc, "mdb_get");
                }
                run.Ticks = Stopwatch.GetTimestamp() - start;
            }
        }
        finally
        {
            mdb_txn_abort(txn);
        }
        if (missing + wrong > 0) throw new InvalidOperationException($"lmdb: lookups found {missing:N0} keys missing and {wrong:N0} wrong values");
        CheckLookupSink(SystemName, keys, sink);
        run.Ops = n;
        Sink ^= sink;
        return run;
    }

    /// <summary>One pass of a cursor over the database: records seen, keys not above the one before and values not matching their keys (verify only), and a sink of what was read.</summary>
    private (long Records, long OutOfOrder, long Wrong, ulong Sink) ScanPass(bool verify)
    {
        Check(mdb_txn_begin(_env, 0, MDB_RDONLY, out nint txn), "mdb_txn_begin");
        nint cursor = 0;
        try
        {
            Check(mdb_cursor_open(txn, _dbi, out cursor), "mdb_cursor_open");
            long records = 0, outOfOrder = 0, wrong = 0;
            ulong sink = 0;
            Span<byte> last = stackalloc byte[KeyStream.KeySize];
            Span<byte> scratch = stackalloc byte[BTreeValues.ValueSize];
            MdbVal k, v;
            int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
            while (rc == 0)
            {
                if (verify)
                {
                    var key = new ReadOnlySpan<byte>(k.Data, (int)k.Size);
                    if (records > 0 && key.SequenceCompareTo(last) <= 0) outOfOrder++;
                    if (!BTreeValues.Matches(key, new ReadOnlySpan<byte>(v.Data, (int)v.Size), scratch)) wrong++;
                    key.CopyTo(last);
                }
                else sink ^= *(ulong*)k.Data ^ v.Data[0];
                records++;
                rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
            }
            if (rc != MDB_NOTFOUND) Check(rc, "mdb_cursor_get");
            return (records, outOfOrder, wrong, sink);
        }
        finally
        {
            if (cursor != 0) mdb_cursor_close(cursor);
            mdb_txn_abort(txn);
        }
    }

    public override Task VerifyAsync(KeySet keys, bool empty) => Task.Run(() =>
    {
        Check(mdb_txn_begin(_env, 0, MDB_RDONLY, out nint txn), "mdb_txn_begin");
        try
        {
            MdbStat st;
            Check(mdb_stat(txn, _dbi, &st), "mdb_stat");
            long missing = 0, wrong = 0;
            MdbVal k, v;
            if (empty)
            {
                // the count, and a cursor finding no first record
                Check(mdb_cursor_open(txn, _dbi, out nint cursor), "mdb_cursor_open");
                try
                {
                    int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
                    if (rc == 0) wrong++;
                    else if (rc != MDB_NOTFOUND) Check(rc, "mdb_cursor_get");
                }
                finally { mdb_cursor_close(cursor); }
                CheckEmpty(SystemName, "after deleting every key", (long)st.Entries, wrong != 0);
                return;
            }
            Span<byte> scratch = stackalloc byte[BTreeValues.ValueSize];
            var stream = keys.Insert;
            fixed (byte* kp = stream.Bytes)
            {
                for (int i = 0; i < stream.Count; i++)
                {
                    k = new MdbVal { Size = KeyStream.KeySize, Data = kp + (long)i * KeyStream.KeySize };
                    int rc = mdb_get(txn, _dbi, &k, &v);
                    if (rc == MDB_NOTFOUND) missing++;
                    else
                    {
                        Check(rc, "mdb_get");
                        if (!BTreeValues.Matches(stream.Key(i), new ReadOnlySpan<byte>(v.Data, (int)v.Size), scratch)) wrong++;
                    }
                }
            }
            CheckVerified(SystemName, "after the insert", (long)st.Entries, stream.Count, missing, wrong);
        }
        finally { mdb_txn_abort(txn); }
    });

    public override Task SabotageAsync(KeySet keys, Sabotage what) => Task.Run(() =>
    {
        Check(mdb_txn_begin(_env, 0, 0, out nint txn), "mdb_txn_begin");
        try
        {
            var key = what == Sabotage.ExtraKey ? ExtraKey : keys.Insert.Key(keys.Count / 2).ToArray();
            var value = what == Sabotage.ExtraKey ? new byte[BTreeValues.ValueSize] : WrongValueOf(key);
            if (what == Sabotage.ExtraKey) BTreeValues.Fill(key, value);
            fixed (byte* kp = key, vp = value)
            {
                var k = new MdbVal { Size = KeyStream.KeySize, Data = kp };
                var v = new MdbVal { Size = BTreeValues.ValueSize, Data = vp };
                Check(what == Sabotage.DropKey ? mdb_del(txn, _dbi, &k, null) : mdb_put(txn, _dbi, &k, &v, 0), "sabotage");
            }
            nint t = txn;
            txn = 0;
            Check(mdb_txn_commit(t), "mdb_txn_commit");
        }
        finally
        {
            if (txn != 0) mdb_txn_abort(txn);
        }
    });

    public override Task AfterAsync(string workload, KeySet keys, PhaseRun run)
    {
        if (workload != BTreeBench.Insert) return Task.CompletedTask;
        Check(mdb_txn_begin(_env, 0, MDB_RDONLY, out nint txn), "mdb_txn_begin");
        MdbStat st;
        try { Check(mdb_stat(txn, _dbi, &st), "mdb_stat"); }
        finally { mdb_txn_abort(txn); }
        long pages = (long)(st.BranchPages + st.LeafPages + st.OverflowPages);
        long bytes = pages * st.PageSize;
        double perKey = (double)bytes / Math.Max(1, keys.Count);
        run.Extra["storage_bytes_per_key"] = perKey;
        run.Notes.Add($"storage after insert: {bytes / (double)(1 << 20):N1} MiB in {pages:N0} pages of {st.PageSize} B ({st.BranchPages:N0} branch, {st.LeafPages:N0} leaf), " +
            $"depth {st.Depth}, {st.Entries:N0} entries: {perKey:N1} B per key (key + value: {KeyStream.KeySize + BTreeValues.ValueSize} B)");
        run.Notes.Add($"{Version()}, env flags MDB_NOSYNC (commits are not synced: not durable), map {_mapSize >> 20} MiB");
        return Task.CompletedTask;
    }

    public override ValueTask DisposeAsync()
    {
        if (_env != 0) mdb_env_close(_env);
        _env = 0;
        return ValueTask.CompletedTask;
    }
}
