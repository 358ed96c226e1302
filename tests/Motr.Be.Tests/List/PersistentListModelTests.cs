using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Tx;
using static Motr.Be.Tests.List.ListLayout;

namespace Motr.Be.Tests.List;

/// <summary>
/// Long random sequences of add / add_tail / add_after / add_before / del, committed multi-op
/// transactions, aborted multi-op transactions and misuse attempts over several lists per segment,
/// compared after every step with a <see cref="List{T}"/> model (forward and backward walks, count,
/// next/prev, <see cref="PersistentList.Check"/>), with dispose-and-reopen (recovery) every few hundred
/// steps and comparison again.
/// </summary>
public sealed class PersistentListModelTests
{
    private const int ListsPerSegment = 6;
    private const int Elements = 480;      // element pool per segment: 64-byte records from 8 KiB
    private const int MaxLength = 60;      // lists drift around half this

    private enum Kind { Add, AddTail, AddAfter, AddBefore, Del }

    private readonly record struct Planned(Kind Kind, int List, long Existing, long Elem);

    /// <summary>The model and the random source of one segment's run; outlives the engines.</summary>
    private sealed class Driver(int seed)
    {
        private readonly Random _rng = new(seed);
        private List<long>[] _model = Enumerable.Range(0, ListsPerSegment).Select(_ => new List<long>()).ToArray();
        private int[] _where = Enumerable.Repeat(-1, Elements).ToArray();    // element index -> list, -1 free
        private List<int> _free = Enumerable.Range(0, Elements).ToList();
        private bool _created;

        public int Seed { get; } = seed;
        public int Steps { get; private set; }
        public long Ops { get; private set; }
        public long AbortedOps { get; private set; }
        public int Misuses { get; private set; }
        public int Reopens { get; private set; }

        private static int IndexOf(long elem) => (int)((elem - ElemsStart) / ElemSize);

        private string Where(string what) => $"seed {Seed}, step {Steps}, {what}";

        public async Task<PersistentList[]> OpenAsync(Segment seg)
        {
            if (!_created)
            {
                using var tx = await seg.BeginAsync(PersistentList.CreateCredit * ListsPerSegment);
                for (int i = 0; i < ListsPerSegment; i++) PersistentList.Create(tx, seg, HeadAt(i));
                _ = tx.Close();
                _created = true;
            }
            else Reopens++;
            var lists = new PersistentList[ListsPerSegment];
            for (int i = 0; i < ListsPerSegment; i++) lists[i] = new PersistentList(seg, HeadAt(i), LinkOffset);
            VerifyAll(lists, _created && Reopens > 0 ? "after reopen" : "after create");
            return lists;
        }

        public void VerifyAll(PersistentList[] lists, string what)
        {
            for (int i = 0; i < ListsPerSegment; i++) ListAssert.Same(lists[i], _model[i], Where($"{what}, list {i}"));
        }

        private Planned Plan()
        {
            int li = _rng.Next(ListsPerSegment);
            var m = _model[li];
            bool canAdd = _free.Count > 0;
            if (m.Count > 0 && (!canAdd || _rng.NextDouble() < 0.1 + 0.8 * m.Count / MaxLength))
                return new Planned(Kind.Del, li, 0, m[_rng.Next(m.Count)]);
            int fi = _rng.Next(_free.Count);
            long elem = Elem(_free[fi]);
            var kind = (Kind)_rng.Next(4);
            if (m.Count == 0 && kind is Kind.AddAfter or Kind.AddBefore) kind = kind == Kind.AddAfter ? Kind.AddTail : Kind.Add;
            long existing = kind is Kind.AddAfter or Kind.AddBefore ? m[_rng.Next(m.Count)] : 0;
            return new Planned(kind, li, existing, elem);
        }

        private static TxCredit CreditOf(Kind k) => k switch
        {
            Kind.Add => PersistentList.AddCredit,
            Kind.AddTail => PersistentList.AddTailCredit,
            Kind.AddAfter or Kind.AddBefore => PersistentList.InsertCredit,
            _ => PersistentList.DelCredit,
        };

        /// <summary>Applies a planned op to the persistent list and to the model alike.</summary>
        private void Apply(Transaction tx, PersistentList[] lists, Planned p)
        {
            var list = lists[p.List];
            var m = _model[p.List];
            switch (p.Kind)
            {
                case Kind.Add: list.Add(tx, p.Elem); m.Insert(0, p.Elem); break;
                case Kind.AddTail: list.AddTail(tx, p.Elem); m.Add(p.Elem); break;
                case Kind.AddAfter: list.AddAfter(tx, p.Existing, p.Elem); m.Insert(m.IndexOf(p.Existing) + 1, p.Elem); break;
                case Kind.AddBefore: list.AddBefore(tx, p.Existing, p.Elem); m.Insert(m.IndexOf(p.Existing), p.Elem); break;
                case Kind.Del:
                    list.Del(tx, p.Elem);
                    m.Remove(p.Elem);
                    _where[IndexOf(p.Elem)] = -1;
                    _free.Add(IndexOf(p.Elem));
                    Ops++;
                    return;
            }
            int ei = IndexOf(p.Elem);
            _where[ei] = p.List;
            _free.Remove(ei);
            Ops++;
        }

        public async Task StepAsync(Segment seg, PersistentList[] lists)
        {
            Steps++;
            int r = _rng.Next(100);
            if (r < 8)
            {
                // Several ops in one tx, then abort: nothing may remain of them.
                var saved = (Model: _model.Select(l => new List<long>(l)).ToArray(), Where: (int[])_where.Clone(), Free: new List<int>(_free));
                byte[] before = ListAssert.Snapshot(seg);
                int k = _rng.Next(2, 9);
                using var tx = await seg.BeginAsync(PersistentList.InsertCredit * k);
                for (int i = 0; i < k; i++) Apply(tx, lists, Plan());
                VerifyAll(lists, "inside a tx to be aborted");
                tx.Abort();
                AbortedOps += k;
                Ops -= k;
                (_model, _where, _free) = saved;
                if (!before.AsSpan().SequenceEqual(ListAssert.Snapshot(seg))) Assert.Fail(Where("abort did not restore the bytes"));
                VerifyAll(lists, "after abort");
            }
            else if (r < 16)
            {
                // Several ops committed together.
                int k = _rng.Next(2, 9);
                using var tx = await seg.BeginAsync(PersistentList.InsertCredit * k);
                for (int i = 0; i < k; i++) Apply(tx, lists, Plan());
                _ = tx.Close();
                VerifyAll(lists, "after a multi-op tx");
            }
            else if (r < 19)
            {
                Misuse(seg, lists, await seg.BeginAsync(PersistentList.InsertCredit));
                VerifyAll(lists, "after misuse");
            }
            else
            {
                // One op in a tx with exactly its credit.
                var p = Plan();
                using var tx = await seg.BeginAsync(CreditOf(p.Kind));
                Apply(tx, lists, p);
                _ = tx.Close();
                VerifyAll(lists, $"after {p.Kind} of 0x{p.Elem:X} on list {p.List}");
            }
        }

        private void Misuse(Segment seg, PersistentList[] lists, Transaction tx)
        {
            using var owned = tx;
            int li = _rng.Next(ListsPerSegment);
            var list = lists[li];
            int owner = _rng.Next(ListsPerSegment);
            long linked = _model[owner].Count > 0 ? _model[owner][_rng.Next(_model[owner].Count)] : 0;
            long free = _free.Count > 0 ? Elem(_free[_rng.Next(_free.Count)]) : 0;
            Action bad = (_rng.Next(4), linked != 0, free != 0) switch
            {
                (0, true, _) => () => list.AddTail(tx, linked),                                      // already linked
                (1, true, true) => () => list.AddAfter(tx, free, Elem(_free[0])),                    // existing not on the list
                (2, _, true) => () => list.Del(tx, free),                                            // not linked
                (3, true, _) when owner != li => () => list.Del(tx, linked),                         // on another list
                _ => () => list.Add(tx, seg.Size),                                                   // outside the segment
            };
            byte[] before = ListAssert.Snapshot(seg);
            var ex = Assert.Throws<BeException>(bad);
            Assert.Contains($"list 0x{HeadAt(li):X} in segment {seg.Id}", ex.Message);
            if (!before.AsSpan().SequenceEqual(ListAssert.Snapshot(seg))) Assert.Fail(Where($"misuse changed bytes: {ex.Message}"));
            _ = tx.Close();
            Misuses++;
        }
    }

    /// <summary>Runs <paramref name="steps"/> steps on every segment, reopening the domain every 200-400 steps.</summary>
    private static async Task<Driver[]> RunAsync(int segments, int steps, int seed)
    {
        using var dir = new ListDomain(segments);
        var drivers = Enumerable.Range(0, segments).Select(i => new Driver(seed * 1000 + i)).ToArray();
        var batches = new Random(seed);
        int done = 0;
        while (true)
        {
            int batch = Math.Min(steps - done, 200 + batches.Next(201));
            await using (var engine = await dir.OpenAsync())
            {
                Assert.Equal(segments, engine.Localities.Count);
                var runs = new Task[segments];
                for (int i = 0; i < segments; i++)
                {
                    var loc = engine.Localities[i];
                    var d = drivers[i];
                    runs[i] = loc.RunAsync(async () =>
                    {
                        var seg = loc.Segment!;
                        Assert.Equal((ulong)(loc.Index + 1), seg.Id);
                        var lists = await d.OpenAsync(seg);
                        for (int s = 0; s < batch; s++) await d.StepAsync(seg, lists);
                    });
                }
                await Task.WhenAll(runs);
            }
            if (batch == 0) break;   // the last round only reopened and verified
            done += batch;
        }
        foreach (var d in drivers)
        {
            Assert.Equal(steps, d.Steps);
            Assert.True(d.Reopens >= steps / 400, $"only {d.Reopens} reopens");
            Assert.True(d.AbortedOps > steps / 10, $"only {d.AbortedOps} aborted ops");
            Assert.True(d.Misuses > steps / 50, $"only {d.Misuses} misuse checks");
        }
        return drivers;
    }

    [Fact]
    public async Task Random_ops_on_six_lists_in_one_segment_match_the_model_across_reopens()
    {
        var drivers = await RunAsync(segments: 1, steps: 12_000, seed: 17);
        Assert.True(drivers[0].Ops + drivers[0].AbortedOps >= 15_000, $"{drivers[0].Ops} ops, {drivers[0].AbortedOps} aborted");
    }

    [Fact]
    public async Task Random_ops_on_two_segments_and_localities_match_the_model_across_reopens()
    {
        var drivers = await RunAsync(segments: 2, steps: 7_000, seed: 29);
        Assert.All(drivers, d => Assert.True(d.Ops + d.AbortedOps >= 8_000, $"{d.Ops} ops, {d.AbortedOps} aborted"));
    }
}
