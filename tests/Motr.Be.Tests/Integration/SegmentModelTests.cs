using Motr.Be.Alloc;
using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Xunit.Abstractions;

namespace Motr.Be.Tests.Integration;

/// <summary>
/// The engine's pieces together: transactions mixing allocator, persistent-list and plain data changes,
/// several operations per transaction, committed or aborted, on two localities at once; after every step
/// the segment is compared with a plain model (the list's order and every element's bytes, the allocator's
/// used bytes), and again after every close-and-reopen (recovery).
/// </summary>
public class SegmentModelTests(ITestOutputHelper output)
{
    private const string Root = "model-list";
    private const int Header = 40;               // ListLink (32) + element id (8), then the payload
    private static readonly TxCredit InsertOp = Allocator.AllocCredit + PersistentList.InsertCredit + TxCredit.Region(Header + 512);
    private static readonly TxCredit DeleteOp = PersistentList.DelCredit + Allocator.FreeCredit;
    private static readonly TxCredit UpdateOp = TxCredit.Region(512);
    private static readonly TxCredit AnyOp = TxCredit.Max(InsertOp, TxCredit.Max(DeleteOp, UpdateOp));

    private sealed class Element(long offset, long id, byte[] payload)
    {
        public readonly long Offset = offset;
        public readonly long Id = id;
        public byte[] Payload = payload;
    }

    private sealed class Model(int seed)
    {
        public readonly Random Rng = new(seed);
        public List<Element> Elements = new();
        public long NextId = 1, Steps, Commits, Aborts, Inserts, Deletes, Updates;
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public async Task Mixed_alloc_list_and_data_txs_match_the_model_on_two_localities(int seed)
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 2, segmentSize: 1 << 20);
        o.VerifyCaptures = true;
        var models = new[] { new Model(seed * 10 + 1), new Model(seed * 10 + 2) };
        const int Rounds = 8, StepsPerRound = 1500;
        for (int round = 0; round < Rounds; round++)
        {
            await using var e = await Engines.Open(o);
            var runs = new Task[2];
            for (int i = 0; i < 2; i++)
            {
                var loc = e.Localities[i];
                var m = models[i];
                runs[i] = loc.RunAsync(async () =>
                {
                    var list = await OpenList(loc.Segment!);
                    Compare(loc.Segment!, list, m, $"after reopen {round}");
                    await Steps(loc, list, m, StepsPerRound);
                });
            }
            await Task.WhenAll(runs);
            Assert.Empty(e.Domain.CaptureViolations);
        }
        foreach (var m in models)
            output.WriteLine($"seed {seed}: {m.Steps} steps, {m.Commits} commits, {m.Aborts} aborts, {m.Inserts} inserts, " +
                $"{m.Deletes} deletes, {m.Updates} updates, {m.Elements.Count} elements at the end, {Rounds} reopens");
        Assert.All(models, m => Assert.True(m.Aborts > 100 && m.Deletes > 100 && m.Elements.Count > 10));
    }

    private static async Task<PersistentList> OpenList(Segment seg)
    {
        if (seg.TryGetRoot(Root, out long head)) return new PersistentList(seg, head, 0);
        using var tx = await seg.BeginAsync(Allocator.AllocCredit + PersistentList.CreateCredit + Segment.RootCredit);
        head = seg.Allocator.Alloc(tx, ListHead.SizeOf);
        PersistentList.Create(tx, seg, head);
        seg.SetRoot(tx, Root, head);
        await tx.Close();
        return new PersistentList(seg, head, 0);
    }

    private static async Task Steps(Locality loc, PersistentList list, Model m, int count)
    {
        var seg = loc.Segment!;
        var rng = m.Rng;
        TxPersistence last = default;
        for (int step = 0; step < count; step++, m.Steps++)
        {
            int ops = rng.Next(8) == 0 ? rng.Next(2, 6) : 1;
            bool abort = rng.Next(4) == 0;
            using var tx = await seg.BeginAsync(AnyOp * ops);
            // Apply to a copy of the model; keep it only if the tx commits.
            var elements = new List<Element>(m.Elements);
            var changed = new List<(Element E, byte[] Old)>();
            long nextId = m.NextId;
            for (int k = 0; k < ops; k++)
            {
                int kind = elements.Count < 20 ? 0 : elements.Count > 300 ? 1 : rng.Next(3);
                if (kind == 0)
                {
                    int len = rng.Next(1, 512);
                    long off = seg.Allocator.Alloc(tx, Header + len);
                    var payload = new byte[len];
                    rng.NextBytes(payload);
                    var span = tx.Capture(off + 32, 8 + len);
                    BitConverter.TryWriteBytes(span, nextId);
                    payload.CopyTo(span[8..]);
                    var el = new Element(off, nextId++, payload);
                    int at = rng.Next(elements.Count + 1);
                    if (at == 0) list.Add(tx, off);
                    else list.AddAfter(tx, elements[at - 1].Offset, off);
                    elements.Insert(at, el);
                    m.Inserts++;
                }
                else if (kind == 1)
                {
                    int at = rng.Next(elements.Count);
                    var el = elements[at];
                    list.Del(tx, el.Offset);
                    seg.Allocator.Free(tx, el.Offset);
                    elements.RemoveAt(at);
                    m.Deletes++;
                }
                else
                {
                    var el = elements[rng.Next(elements.Count)];
                    int from = rng.Next(el.Payload.Length), len = rng.Next(1, el.Payload.Length - from + 1);
                    var span = tx.Capture(el.Offset + Header + from, len);
                    rng.NextBytes(span);
                    var updated = (byte[])el.Payload.Clone();
                    span.CopyTo(updated.AsSpan(from));
                    changed.Add((el, el.Payload));
                    el.Payload = updated;
                    m.Updates++;
                }
            }
            if (abort)
            {
                tx.Abort();
                m.Aborts++;
                for (int c = changed.Count - 1; c >= 0; c--) changed[c].E.Payload = changed[c].Old; // undo the model's updates, newest first
            }
            else
            {
                last = tx.Close();
                m.Commits++;
                m.Elements = elements;
                m.NextId = nextId;
            }
            Compare(seg, list, m, $"step {m.Steps}");
            if (step % 50 == 0) Assert.Empty(list.Check());
            if (step % 200 == 0) Assert.Empty(seg.Allocator.Check());
            if (step % 31 == 0) await last;
        }
        await last;
    }

    private static void Compare(Segment seg, PersistentList list, Model m, string when)
    {
        Assert.Equal(m.Elements.Count, list.Count);
        int i = 0;
        long usable = seg.Allocator.UsableSize(list.HeadOffset);
        foreach (long off in list)
        {
            var el = m.Elements[i++];
            Assert.True(el.Offset == off, $"segment {seg.Id} {when}: element {i - 1} is at 0x{off:X}, model says 0x{el.Offset:X}");
            Assert.Equal(el.Id, seg.At<long>(off + 32));
            if (!seg.Bytes(off + Header, el.Payload.Length).SequenceEqual(el.Payload))
                Assert.Fail($"segment {seg.Id} {when}: element {el.Id} at 0x{off:X} has other bytes than the model");
            usable += seg.Allocator.UsableSize(off);
        }
        Assert.Equal(usable, seg.Allocator.UsedBytes);
    }
}
