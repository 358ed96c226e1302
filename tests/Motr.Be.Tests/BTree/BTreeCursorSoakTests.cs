using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// A seeded soak of the cursor registry against a model: two trees in one segment, several objects on each (sharing
/// the tree's registry), many cursors per object — positioned, at the end, never positioned, dropped and collected —
/// through random inserts, in-place inserts, updates and deletes through random objects, transactions of several
/// operations with savepoints rolled back to, aborted, left open across a turn (aborted by the engine) or closed,
/// delete-all (also cancelled midway), destroy and re-create of the second tree, and aborted destroys. After every
/// step every cursor checked must be where the model says: at its last key while that key exists (reading a deleted
/// one throws), and its next move to the model's neighbour of that key; both trees pass fsck; the registries do not
/// keep dead cursors or watchers. Deterministic per seed (<c>MOTR_CURSOR_SOAK_STEPS</c> overrides the step count).
/// </summary>
public class BTreeCursorSoakTests(ITestOutputHelper output)
{
    /// <param name="keys">Distinct keys the changes draw from (more: a taller tree).</param>
    /// <param name="fixedKey">0: variable keys and values (some out of node); else keys of this size and 24-byte values
    /// (fixed format; above 64 bytes, the size of a cursor's first key buffer).</param>
    [Theory]
    [InlineData(1, 512, false, 700, 0)]
    [InlineData(2, 512, true, 700, 0)]
    [InlineData(3, 1024, false, 700, 0)]
    [InlineData(4, 512, false, 2500, 0)]
    [InlineData(5, 1024, true, 700, 0)]
    [InlineData(6, 512, false, 1500, 72)]
    public async Task Cursors_on_shared_trees_follow_the_model_through_changes_rollbacks_and_aborts(int seed, int nodeSize, bool crc, int keys, int fixedKey)
    {
        int steps = int.TryParse(Environment.GetEnvironmentVariable("MOTR_CURSOR_SOAK_STEPS"), out int s) ? s : 2000;
        await using var h = await TreeHost.Start();
        string summary = await h.Run(async seg =>
        {
            var soak = new CursorSoak(seg, new Random(seed), nodeSize, crc, keys, fixedKey);
            await soak.Run(steps);
            return soak.Summary;
        });
        output.WriteLine($"seed {seed}, {nodeSize} B nodes{(crc ? ", record checksums" : "")}{(fixedKey > 0 ? $", {fixedKey}-byte keys" : "")}: {summary}");
        h.AssertNoCaptureViolations();
    }
}

/// <summary>The soak's state and steps (a class of its own so that nothing it drops stays reachable from an async frame).</summary>
internal sealed class CursorSoak
{
    private const int MaxKey = 400, MaxValue = 700, FixedValue = 24;

    private sealed class Model
    {
        public SortedDictionary<byte[], byte[]> Dict = new(ByteArrayComparer.Instance);
        private byte[][]? _keys;

        public byte[][] Keys => _keys ??= Dict.Keys.ToArray();
        public void Changed() => _keys = null;
        public void Set(SortedDictionary<byte[], byte[]> d)
        {
            Dict = new SortedDictionary<byte[], byte[]>(d, ByteArrayComparer.Instance);
            _keys = null;
        }
        public SortedDictionary<byte[], byte[]> Copy() => new(Dict, ByteArrayComparer.Instance);

        /// <summary>Index of the first key not below <paramref name="k"/> (Keys.Length if none).</summary>
        public int LowerBound(byte[] k)
        {
            var keys = Keys;
            int lo = 0, hi = keys.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) >> 1;
                if (ByteArrayComparer.Instance.Compare(keys[mid], k) < 0) lo = mid + 1;
                else hi = mid;
            }
            return lo;
        }

        public byte[]? Ceiling(byte[] k) { int i = LowerBound(k); return i < Keys.Length ? Keys[i] : null; }
        public byte[]? Next(byte[] k)
        {
            int i = LowerBound(k);
            if (i < Keys.Length && ByteArrayComparer.Instance.Equals(Keys[i], k)) i++;
            return i < Keys.Length ? Keys[i] : null;
        }
        public byte[]? Prev(byte[] k) { int i = LowerBound(k) - 1; return i >= 0 ? Keys[i] : null; }
    }

    private sealed class TreeState(string name)
    {
        public readonly string Name = name;
        public readonly List<Tree> Objects = [];
        public readonly Model Model = new();
        public int Generation;
    }

    private sealed class Cur(BTreeCursor c, Tree owner, TreeState t, int id)
    {
        public readonly BTreeCursor C = c;
        public readonly Tree Owner = owner; // the object it was opened on (a cursor keeps it alive)
        public readonly TreeState T = t;
        public readonly int Id = id;
        public byte[]? At; // the last key the cursor was at; null: unpositioned (never, or past an end)
    }

    private readonly Segment _seg;
    private readonly Random _rng;
    private readonly BTreeConfig _config;
    private readonly byte[][] _pool;
    private readonly TreeState _a = new("A"), _b = new("B");
    private readonly List<Cur> _cursors = [];
    private readonly List<(BTreeCursor C, Tree T)> _ghosts = []; // cursors and objects of a destroyed tree
    private int _nextId, _step;
    private long _checked, _moves, _rollbacks, _aborts, _turnEndAborts, _closed, _deleteAlls, _recreates, _maxRegistered, _maxHeight;

    private readonly int _fixedKey;
    private byte[] Probe => new byte[_fixedKey > 0 ? _fixedKey : 1];
    private readonly int _bigTree; // records above which deletes win, in the growing phase

    public CursorSoak(Segment seg, Random rng, int nodeSize, bool crc, int keys, int fixedKey)
    {
        _seg = seg;
        _rng = rng;
        _fixedKey = fixedKey;
        _bigTree = keys * 6 / 7;
        _config = fixedKey > 0
            ? new BTreeConfig { NodeSize = nodeSize, RecordChecksums = crc, KeySize = fixedKey, ValueSize = FixedValue }
            : new BTreeConfig { NodeSize = nodeSize, RecordChecksums = crc };
        // Keys over a small alphabet, so many are prefixes of others; some over the inline limit (out of node).
        byte[] alphabet = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff];
        var set = new HashSet<byte[]>(ByteArrayComparer.Instance);
        while (set.Count < keys)
        {
            int len = fixedKey > 0 ? fixedKey : rng.Next(10) == 0 ? rng.Next(nodeSize / 4 - 8, MaxKey + 1) : rng.Next(1, 7);
            var k = new byte[len];
            for (int i = 0; i < len; i++) k[i] = i < 6 ? alphabet[rng.Next(alphabet.Length)] : (byte)rng.Next(256);
            set.Add(k);
        }
        _pool = set.ToArray();
    }

    public string Summary =>
        $"{_step} steps, {_checked} cursor checks, {_moves} moves, {_closed} closed, {_aborts} aborted, {_turnEndAborts} aborted at a turn's end, " +
        $"{_rollbacks} rollbacks to a savepoint, {_deleteAlls} delete-alls, {_recreates} re-creates; A {_a.Model.Dict.Count} records " +
        $"height {_a.Objects[0].Height} (at most {_maxHeight}), most cursors registered on A {_maxRegistered}";

    private string Where => $"step {_step}";

    public async Task Run(int steps)
    {
        _a.Objects.Add(await Ops.Create(_seg, _config, "a"));
        await CreateB();
        for (int i = 0; i < 2; i++) _a.Objects.Add(Tree.Open(_seg, _a.Objects[0].Offset));
        // Start A with some records, so the tree has height from the beginning.
        for (int i = 0; i < 300; i++) await OneOpClosed(_a);
        for (int i = 0; i < 12; i++) OpenCursor(_rng.Next(3) == 0 ? _b : _a);

        for (_step = 0; _step < steps; _step++)
        {
            int r = _rng.Next(1000);
            if (r < 300) await OneOpClosed(_rng.Next(4) == 0 ? _b : _a);
            else if (r < 330) await Burst(_rng.Next(4) == 0 ? _b : _a);
            else if (r < 580) await SeveralOps();
            else if (r < 850) for (int j = _rng.Next(1, 6); j > 0; j--) CursorAction(PickCursor());
            else if (r < 950) Churn();
            else if (r < 960) await DeleteAll(_rng.Next(8) == 0 ? _a : _b);
            else if (r < 966) await RecreateB();
            else if (r < 972) await AbortedDestroy();
            else if (r < 980) Ghosts();
            else if (r < 990) ReadThroughObjects();
            else await CollectAndCount();
            AfterStep();
        }
        await CollectAndCount();
        foreach (var c in _cursors) Check(c);
        Ops.AssertEqual(_a.Objects[0], _a.Model.Dict, $"{Where}: A at the end");
        Ops.AssertEqual(_b.Objects[0], _b.Model.Dict, $"{Where}: B at the end");
    }

    // ---- checks ----------------------------------------------------------------------------------------

    private void AfterStep()
    {
        foreach (var t in new[] { _a, _b })
        {
            var o = t.Objects[_rng.Next(t.Objects.Count)];
            Assert.True(t.Model.Dict.Count == o.Count, $"{Where}: tree {t.Name} counts {o.Count}, the model {t.Model.Dict.Count}");
            Ops.AssertHealthy(o, $"{Where}: tree {t.Name}");
        }
        // A random part of the cursors each step: checking all would reposition them all, and a cursor left stale
        // across several changes is a case of its own.
        foreach (var c in _cursors)
            if (_rng.Next(4) == 0) Check(c);
        if (_step % 200 == 199)
        {
            Ops.AssertEqual(_a.Objects[_rng.Next(_a.Objects.Count)], _a.Model.Dict, $"{Where}: A");
            Ops.AssertEqual(_b.Objects[_rng.Next(_b.Objects.Count)], _b.Model.Dict, $"{Where}: B");
        }
    }

    /// <summary>The cursor is where the model says, without moving it.</summary>
    private void Check(Cur c)
    {
        _checked++;
        if (c.At is null)
        {
            Assert.False(c.C.IsValid, $"{Where}: cursor {c.Id} on {c.T.Name} is valid; the model has it unpositioned");
            return;
        }
        if (c.T.Model.Dict.TryGetValue(c.At, out var v))
        {
            var k = c.C.Key;
            if (!k.SequenceEqual(c.At)) Assert.Fail($"{Where}: cursor {c.Id} on {c.T.Name} at {Ops.Hex(k)}, the model at {Ops.Hex(c.At)}");
            if (!c.C.Value.SequenceEqual(v)) Assert.Fail($"{Where}: cursor {c.Id} on {c.T.Name} at {Ops.Hex(c.At)}: value of {c.C.Value.Length} bytes, the model's {v.Length}");
        }
        else
        {
            var e = Assert.Throws<InvalidOperationException>(() => c.C.Key.Length);
            Assert.Contains("deleted", e.Message);
        }
    }

    private void Expect(Cur c, bool moved, byte[]? want, string what)
    {
        _moves++;
        if (moved != want is not null)
            Assert.Fail($"{Where}: cursor {c.Id} on {c.T.Name} {what} from {(c.At is null ? "nowhere" : Ops.Hex(c.At))}: moved {moved}, the model {(want is null ? "none" : Ops.Hex(want))}");
        c.At = want;
        if (want is null) Assert.False(c.C.IsValid, $"{Where}: cursor {c.Id} {what}: false but valid");
        else Check(c);
    }

    // ---- cursors ---------------------------------------------------------------------------------------

    private Cur PickCursor()
    {
        if (_cursors.Count == 0) OpenCursor(_a);
        return _cursors[_rng.Next(_cursors.Count)];
    }

    private void OpenCursor(TreeState t)
    {
        var o = t.Objects[_rng.Next(t.Objects.Count)];
        var c = new Cur(o.OpenCursor(), o, t, _nextId++);
        _cursors.Add(c);
        if (_rng.Next(3) != 0) CursorAction(c);
    }

    private byte[] SomeKey(TreeState t)
    {
        var keys = t.Model.Keys;
        int r = _rng.Next(10);
        if (r < 4 && keys.Length > 0) return keys[_rng.Next(keys.Length)];
        var k = _pool[_rng.Next(_pool.Length)];
        if (r == 9 && _fixedKey == 0) k = [.. k, (byte)_rng.Next(256)]; // a key just above one of the pool
        else if (r == 9) { k = (byte[])k.Clone(); k[^1]++; } // a key near one of the pool
        return k;
    }

    private void CursorAction(Cur c)
    {
        var m = c.T.Model;
        switch (_rng.Next(12))
        {
            case 0:
            case 1:
            {
                var p = SomeKey(c.T);
                c.At = null;
                Expect(c, c.C.Seek(p), m.Ceiling(p), $"seek {Ops.Hex(p)}");
                break;
            }
            case 2:
                c.At = null;
                Expect(c, c.C.SeekFirst(), m.Keys.FirstOrDefault(), "seek-first");
                break;
            case 3:
                c.At = null;
                Expect(c, c.C.SeekLast(), m.Keys.LastOrDefault(), "seek-last");
                break;
            case 4:
            case 5:
            case 6:
                Expect(c, c.C.MoveNext(), c.At is null ? null : m.Next(c.At), "next");
                break;
            case 7:
            case 8:
                Expect(c, c.C.MovePrev(), c.At is null ? null : m.Prev(c.At), "prev");
                break;
            case 9:
            {
                var bound = SomeKey(c.T);
                bool inclusive = _rng.Next(2) == 0;
                var next = c.At is null ? null : m.Next(c.At);
                int cmp = next is null ? 0 : ByteArrayComparer.Instance.Compare(next, bound);
                var want = next is not null && (cmp < 0 || (cmp == 0 && inclusive)) ? next : null;
                Expect(c, c.C.MoveNextUpTo(bound, inclusive), want, $"next-upto {Ops.Hex(bound)}{(inclusive ? "" : " excl")}");
                break;
            }
            case 10:
            {
                // A walk of several steps one way.
                bool fwd = _rng.Next(2) == 0;
                for (int i = _rng.Next(2, 40); i > 0 && c.At is not null; i--)
                    Expect(c, fwd ? c.C.MoveNext() : c.C.MovePrev(), fwd ? m.Next(c.At) : m.Prev(c.At), fwd ? "walk next" : "walk prev");
                break;
            }
            default:
                Check(c);
                break;
        }
    }

    /// <summary>Cursors and objects come and go: new ones, dropped ones (never disposed: a cursor has no Dispose; the GC collects them).</summary>
    private void Churn()
    {
        switch (_rng.Next(6))
        {
            case 0:
            case 1:
                for (int i = _rng.Next(1, 6); i > 0; i--) OpenCursor(_rng.Next(3) == 0 ? _b : _a);
                break;
            case 2:
            case 3:
                for (int i = _rng.Next(1, 6); i > 0 && _cursors.Count > 4; i--) _cursors.RemoveAt(_rng.Next(_cursors.Count));
                break;
            case 4:
            {
                var t = _rng.Next(2) == 0 ? _a : _b;
                if (t.Objects.Count < 4) t.Objects.Add(Tree.Open(_seg, t.Objects[0].Offset));
                break;
            }
            default:
            {
                // Drop an object (its cursors stay usable: each holds its object).
                var t = _rng.Next(2) == 0 ? _a : _b;
                if (t.Objects.Count > 1) t.Objects.RemoveAt(_rng.Next(t.Objects.Count));
                break;
            }
        }
    }

    /// <summary>Min, Max and Slant through random objects (their shared cursors are registered too).</summary>
    private void ReadThroughObjects()
    {
        foreach (var t in new[] { _a, _b })
        {
            var o = t.Objects[_rng.Next(t.Objects.Count)];
            var keys = t.Model.Keys;
            var st = o.Min(out var k, out _);
            Assert.Equal(keys.Length > 0 ? BTreeStatus.Ok : BTreeStatus.NotFound, st);
            if (keys.Length > 0) Assert.True(k.SequenceEqual(keys[0]), $"{Where}: Min of {t.Name}");
            st = o.Max(out k, out _);
            if (keys.Length > 0) Assert.True(st == BTreeStatus.Ok && k.SequenceEqual(keys[^1]), $"{Where}: Max of {t.Name}");
            var p = SomeKey(t);
            var want = t.Model.Ceiling(p);
            st = o.Slant(p, out k, out var v);
            Assert.Equal(want is null ? BTreeStatus.NotFound : BTreeStatus.Ok, st);
            if (want is not null)
            {
                Assert.True(k.SequenceEqual(want), $"{Where}: Slant {Ops.Hex(p)} of {t.Name}: {Ops.Hex(k)}, the model {Ops.Hex(want)}");
                Assert.True(v.SequenceEqual(t.Model.Dict[want]));
            }
        }
    }

    /// <summary>Cursors and objects of a destroyed tree refuse every use (the place may hold another tree by now).</summary>
    private void Ghosts()
    {
        foreach (var (c, t) in _ghosts)
        {
            Assert.Throws<ObjectDisposedException>(() => t.Lookup(Probe, out ReadOnlySpan<byte> _));
            Assert.Throws<ObjectDisposedException>(() => c.Seek(Probe));
            bool moved = false;
            try { moved = _rng.Next(2) == 0 ? c.MoveNext() : c.MovePrev(); }
            catch (ObjectDisposedException) { }
            Assert.False(moved, $"{Where}: a cursor of a destroyed tree moved");
            try { _ = c.Key.Length; Assert.Fail($"{Where}: a cursor of a destroyed tree read a key"); }
            catch (ObjectDisposedException) { }
            catch (InvalidOperationException) { }
        }
        if (_ghosts.Count > 20) _ghosts.RemoveRange(0, _ghosts.Count - 20);
    }

    private async Task CollectAndCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        // A change walks the registry and drops the cursors collected.
        await OneOpClosed(_a);
        await OneOpClosed(_b);
        foreach (var t in new[] { _a, _b })
        {
            // Each object alive may have its shared cursor (Min, Slant): those listed, and those dropped whose cursors live on.
            var objects = new HashSet<Tree>(t.Objects, ReferenceEqualityComparer.Instance);
            foreach (var c in _cursors) if (c.T == t) objects.Add(c.Owner);
            int live = _cursors.Count(c => c.T == t) + objects.Count;
            int registered = t.Objects[0].CursorsRegistered;
            if (t == _a) _maxRegistered = Math.Max(_maxRegistered, registered);
            Assert.True(registered <= live, $"{Where}: {registered} cursors registered on {t.Name}, {live} live at most");
        }
        // The segment's table of watchers: one per tree alive, and those of destroyed trees until a lookup prunes them.
        Assert.True(_seg.WatcherEntries <= 16 + 2, $"{Where}: {_seg.WatcherEntries} watchers in the segment's table");
    }

    // ---- changes ---------------------------------------------------------------------------------------

    private byte[] SomeValue()
    {
        int len = _fixedKey > 0 ? FixedValue : _rng.Next(8) == 0 ? _rng.Next(150, MaxValue + 1) : _rng.Next(0, 40);
        var v = new byte[len];
        _rng.NextBytes(v);
        return v;
    }

    private static bool Covers(Transaction tx, TxCredit need)
    {
        TxCredit c = tx.Credit, u = tx.Used;
        return c.Regions - u.Regions >= need.Regions && c.Bytes - u.Bytes >= need.Bytes;
    }

    /// <summary>One random change to <paramref name="t"/> through a random object (or a fresh one), checked against the model and applied to it.</summary>
    private void Change(Transaction tx, TreeState t)
    {
        var o = _rng.Next(10) == 0 ? Tree.Open(_seg, t.Objects[0].Offset) : t.Objects[_rng.Next(t.Objects.Count)];
        var m = t.Model;
        // Inserts win while the tree is small, deletes while it is large: it grows and shrinks through its heights.
        int phase = (_step / 300) % 2;
        int r = _rng.Next(100);
        bool big = m.Dict.Count > (phase == 0 ? _bigTree : 150);
        byte[] k = _rng.Next(3) == 0 && m.Keys.Length > 0 ? m.Keys[_rng.Next(m.Keys.Length)] : _pool[_rng.Next(_pool.Length)];
        bool has = m.Dict.ContainsKey(k);
        if (r < (big ? 25 : 55))
        {
            var v = SomeValue();
            if (!Covers(tx, o.InsertCredit(k.Length, v.Length))) return;
            var st = _rng.Next(4) == 0 ? o.InsertInPlace(tx, k, v.Length, v, static (span, s) => s.CopyTo(span)) : o.Insert(tx, k, v);
            Assert.True(st == (has ? BTreeStatus.Exists : BTreeStatus.Ok), $"{Where}: insert {Ops.Hex(k)} into {t.Name}: {st}");
            if (!has) { m.Dict[k] = v; m.Changed(); }
        }
        else if (r < 70)
        {
            var v = SomeValue();
            if (!Covers(tx, o.UpdateCredit(k.Length, v.Length))) return;
            var st = o.Update(tx, k, v);
            Assert.True(st == (has ? BTreeStatus.Ok : BTreeStatus.NotFound), $"{Where}: update {Ops.Hex(k)} in {t.Name}: {st}");
            if (has) m.Dict[k] = v;
        }
        else
        {
            if (!Covers(tx, o.DeleteCredit())) return;
            var st = o.Delete(tx, k);
            Assert.True(st == (has ? BTreeStatus.Ok : BTreeStatus.NotFound), $"{Where}: delete {Ops.Hex(k)} from {t.Name}: {st}");
            if (has) { m.Dict.Remove(k); m.Changed(); }
        }
    }

    private static TxCredit Generous(Tree t) => t.InsertCredit(MaxKey, MaxValue) * 2 + t.DeleteCredit() + t.UpdateCredit(MaxKey, MaxValue);

    /// <summary>Many changes to one tree in one closed transaction: the tree grows (or shrinks) through its heights.</summary>
    private async Task Burst(TreeState t)
    {
        int n = _rng.Next(10, 40);
        using var tx = await _seg.BeginAsync(Generous(t.Objects[0]) * n);
        for (int i = 0; i < n; i++) Change(tx, t);
        _ = tx.Close();
        _closed++;
        _maxHeight = Math.Max(_maxHeight, t.Objects[0].Height);
    }

    private async Task OneOpClosed(TreeState t)
    {
        using var tx = await _seg.BeginAsync(Generous(t.Objects[0]));
        Change(tx, t);
        _ = tx.Close();
        _closed++;
    }

    /// <summary>
    /// A transaction of several changes to both trees, with cursor moves between them, savepoints and rollbacks to
    /// them; then closed, aborted, or left open across a turn (the engine aborts it at the turn's end).
    /// </summary>
    private async Task SeveralOps()
    {
        int n = _rng.Next(2, 9);
        var credit = (Generous(_a.Objects[0]) + Generous(_b.Objects[0])) * n;
        var beforeA = _a.Model.Copy();
        var beforeB = _b.Model.Copy();
        using var tx = await _seg.BeginAsync(credit);
        var savepoints = new List<(TxSavepoint Sp, SortedDictionary<byte[], byte[]> A, SortedDictionary<byte[], byte[]> B)>();
        for (int i = 0; i < n; i++)
        {
            int r = _rng.Next(10);
            if (r < 2) savepoints.Add((tx.Savepoint(), _a.Model.Copy(), _b.Model.Copy()));
            else if (r < 3 && savepoints.Count > 0)
            {
                int at = _rng.Next(savepoints.Count);
                tx.RollbackTo(savepoints[at].Sp);
                _a.Model.Set(savepoints[at].A);
                _b.Model.Set(savepoints[at].B);
                savepoints.RemoveRange(at + 1, savepoints.Count - at - 1);
                _rollbacks++;
            }
            else Change(tx, _rng.Next(3) == 0 ? _b : _a);
            // Cursors moved and checked inside the transaction, against its state.
            for (int j = _rng.Next(0, 3); j > 0; j--) CursorAction(PickCursor());
        }
        int end = _rng.Next(10);
        if (end < 6)
        {
            _ = tx.Close();
            _closed++;
            return;
        }
        if (end < 9)
        {
            tx.Abort();
            _aborts++;
        }
        else
        {
            long before = _seg.TxStats.AbortedAtTurnEnd;
            bool captured = tx.Used.Regions > 0;
            await Task.Yield(); // the turn ends with the transaction open: the engine aborts it
            if (captured) Assert.Equal(before + 1, _seg.TxStats.AbortedAtTurnEnd);
            _turnEndAborts++;
        }
        _a.Model.Set(beforeA);
        _b.Model.Set(beforeB);
    }

    /// <summary>Delete-all through a random object: now and then cancelled after its first batch (the model loses the first keys it reported).</summary>
    private async Task DeleteAll(TreeState t)
    {
        _deleteAlls++;
        var o = t.Objects[_rng.Next(t.Objects.Count)];
        int batch = _rng.Next(1, 40);
        if (_rng.Next(2) == 0)
        {
            using var cts = new CancellationTokenSource();
            long reported = 0;
            var progress = new SyncProgress(n => { reported = n; cts.Cancel(); });
            try
            {
                await o.DeleteAllAsync(batch, progress, cts.Token);
            }
            catch (OperationCanceledException)
            {
            }
            foreach (var k in t.Model.Keys.Take((int)reported)) t.Model.Dict.Remove(k);
            t.Model.Changed();
            return;
        }
        // Between its batches (each durable, so across turns), cursors move and are checked against what is left.
        long gone = 0;
        var between = new SyncProgress(n =>
        {
            foreach (var k in t.Model.Keys.Take((int)(n - gone))) t.Model.Dict.Remove(k);
            t.Model.Changed();
            gone = n;
            for (int j = _rng.Next(0, 4); j > 0; j--) CursorAction(PickCursor());
        });
        await o.DeleteAllAsync(batch, between);
        Assert.Empty(t.Model.Dict);
    }

    private async Task CreateB()
    {
        using var tx = await _seg.BeginAsync(Tree.CreateCredit);
        var t = Tree.Create(tx, _seg, _config);
        _ = tx.Close();
        _b.Objects.Clear();
        _b.Objects.Add(t);
        _b.Objects.Add(Tree.Open(_seg, t.Offset));
        _b.Generation++;
    }

    /// <summary>Empties B, destroys it through a random object and makes a new B (perhaps at the same place): B's old cursors and objects become ghosts.</summary>
    private async Task RecreateB()
    {
        _recreates++;
        await DeleteAll(_b);
        if (_b.Model.Dict.Count > 0) await _b.Objects[0].DeleteAllAsync();
        _b.Model.Dict.Clear();
        _b.Model.Changed();
        foreach (var c in _cursors.Where(c => c.T == _b)) Check(c);
        using (var tx = await _seg.BeginAsync(Tree.DestroyCredit))
        {
            _b.Objects[_rng.Next(_b.Objects.Count)].Destroy(tx);
            _ = tx.Close();
        }
        var old = _cursors.Where(c => c.T == _b).ToList();
        _cursors.RemoveAll(c => c.T == _b);
        foreach (var c in old) _ghosts.Add((c.C, _b.Objects[0]));
        await CreateB();
        for (int i = _rng.Next(0, 30); i > 0; i--) await OneOpClosed(_b);
        for (int i = _rng.Next(1, 5); i > 0; i--) OpenCursor(_b);
        Ghosts();
    }

    /// <summary>B destroyed in a transaction that aborts (emptied first, in its own): B, its objects and its cursors go on.</summary>
    private async Task AbortedDestroy()
    {
        if (_b.Model.Dict.Count > 0 && _rng.Next(2) == 0) return;
        if (_b.Model.Dict.Count > 0)
        {
            await _b.Objects[0].DeleteAllAsync(_rng.Next(1, 20));
            _b.Model.Dict.Clear();
            _b.Model.Changed();
        }
        if (_rng.Next(2) == 0)
        {
            using var tx = await _seg.BeginAsync(Tree.DestroyCredit);
            _b.Objects[_rng.Next(_b.Objects.Count)].Destroy(tx);
            tx.Abort();
            _aborts++;
            return;
        }
        // Destroyed after a savepoint and rolled back to it, with changes to A around it, the transaction closed.
        using (var tx = await _seg.BeginAsync(Tree.DestroyCredit + Generous(_a.Objects[0]) * 2))
        {
            Change(tx, _a);
            var sp = tx.Savepoint();
            var model = _a.Model.Copy();
            Change(tx, _a);
            _b.Objects[_rng.Next(_b.Objects.Count)].Destroy(tx);
            Assert.Throws<ObjectDisposedException>(() => _b.Objects[0].Lookup(Probe, out ReadOnlySpan<byte> _));
            tx.RollbackTo(sp);
            _a.Model.Set(model);
            _rollbacks++;
            _ = tx.Close();
            _closed++;
        }
    }
}
