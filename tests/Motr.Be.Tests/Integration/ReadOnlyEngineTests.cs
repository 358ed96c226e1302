using System.Buffers.Binary;
using Motr.Be.Alloc;
using Motr.Be.BTree;
using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.Integration;

/// <summary>
/// An engine on a read-only domain (<see cref="DomainOptions.ReadOnly"/>) used as a reader would: localities attach,
/// every read of the b+tree, list and roots APIs answers what a writing open of the same folder answers, every change
/// is refused at the transaction's begin naming the domain (and the locality keeps serving), and open, reads and close
/// leave every file's bytes and mtime as they were.
/// </summary>
public class ReadOnlyEngineTests
{
    private const string TreeRoot = "tree", ListRoot = "list";
    private const int Keys = 300, Elements = 5;

    private static byte[] Key(int i)
    {
        var k = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(k, i * 2); // even keys: a slant at an odd one lands on the next
        return k;
    }

    /// <summary>
    /// A domain holding, in segment 1, a b+tree (root "tree", <see cref="Keys"/> records, split over several nodes) and a
    /// persistent list (root "list", <see cref="Elements"/> allocated elements), taken while its engine is open: every
    /// transaction is in the log and none is checkpointed, so an open must replay them.
    /// </summary>
    private static async Task<SimStorage> CrashedWithTreeAndList()
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage));
        // The segment files as they were before any transaction: the placer writes the records into the files as they
        // become durable, so with the files of the crash the replay would find its work done, and a reader that skipped
        // records would still read them.
        var unplaced = storage.Clone();
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            Tree tree;
            long head;
            using (var tx = await seg.BeginAsync(Tree.CreateCredit + Allocator.AllocCredit + PersistentList.CreateCredit + Segment.RootCredit * 2))
            {
                tree = Tree.Create(tx, seg, new BTreeConfig { NodeSize = 512 });
                Assert.Equal(AllocStatus.Ok, seg.Allocator.TryAlloc(tx, ListHead.SizeOf, 8, out head));
                PersistentList.Create(tx, seg, head);
                seg.SetRoot(tx, TreeRoot, tree.Offset);
                seg.SetRoot(tx, ListRoot, head);
                await tx.Close();
            }
            for (int i = 0; i < Keys; i++)
            {
                using var tx = await seg.BeginAsync(tree.InsertCredit(4, 12));
                Assert.Equal(BTreeStatus.Ok, tree.Insert(tx, Key(i), BitConverter.GetBytes((long)i * 7).Concat(new byte[] { 1, 2, 3, 4 }).ToArray()));
                await tx.Close();
            }
            var list = new PersistentList(seg, head, 0);
            for (int i = 0; i < Elements; i++)
            {
                using var tx = await seg.BeginAsync(Allocator.AllocCredit + PersistentList.AddTailCredit);
                Assert.Equal(AllocStatus.Ok, seg.Allocator.TryAlloc(tx, 64, 8, out long elem));
                list.AddTail(tx, elem);
                await tx.Close();
            }
        });
        // The engine "crashes" here (its close, flush and checkpoint, is not in the image), and before anything was
        // placed: every record is in the log only.
        var files = unplaced.List().ToDictionary(n => n, unplaced.ReadAll);
        files[BeConstants.LogFileName] = storage.ReadAll(BeConstants.LogFileName);
        return SimStorage.FromFiles(files);
    }

    /// <summary>
    /// Everything a reader can ask of segment 1, as text: its roots, the tree (open, count, height, lookups, a cursor
    /// forward and back, seek, slant, min, max, stats' shape, check), a segment check, the list (count, ends, walks both
    /// ways, neighbours, contains, check), a metrics registration, and the segment's transaction counters.
    /// </summary>
    private static Task<List<string>> ReadAll(Locality loc) => loc.RunAsync(() =>
    {
        var seg = loc.Segment!;
        var seen = new List<string>();
        seen.Add("roots " + string.Join(",", seg.Roots().Select(r => $"{r.Key}=0x{r.Value:X}")));
        Assert.True(seg.TryGetRoot(TreeRoot, out long treeAt));
        Assert.True(seg.TryGetRoot(ListRoot, out long headAt));

        var tree = Tree.Open(seg, treeAt);
        seen.Add($"tree count {tree.Count} height {tree.Height} nodes {tree.NodeCount}");
        for (int i = -1; i <= Keys; i += 37)
        {
            var status = tree.Lookup(Key(i), out var v);
            seen.Add($"lookup {i}: {status} {(status == BTreeStatus.Ok ? Convert.ToHexString(v) : "")}");
        }
        var cookie = default(BTreeCookie);
        Assert.Equal(BTreeStatus.Ok, tree.Lookup(Key(10), out _, ref cookie));
        Assert.Equal(BTreeStatus.Ok, tree.Lookup(Key(11), out _, ref cookie));
        var cursor = tree.OpenCursor();
        var forward = new List<string>();
        for (bool ok = cursor.SeekFirst(); ok; ok = cursor.MoveNext()) forward.Add(Convert.ToHexString(cursor.Key) + ":" + Convert.ToHexString(cursor.Value));
        seen.Add("forward " + string.Join(" ", forward));
        int back = 0;
        for (bool ok = cursor.SeekLast(); ok; ok = cursor.MovePrev()) back++;
        seen.Add($"backward {back}");
        Assert.True(cursor.Seek(Key(100)));
        seen.Add("seek " + Convert.ToHexString(cursor.Key));
        byte[] odd = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(odd, 151);
        seen.Add($"slant {tree.Slant(odd, out var sk, out var sv)} {Convert.ToHexString(sk)} {Convert.ToHexString(sv)}");
        seen.Add($"min {tree.Min(out var mk, out _)} {Convert.ToHexString(mk)}");
        seen.Add($"max {tree.Max(out var xk, out _)} {Convert.ToHexString(xk)}");
        var stats = tree.Stats;
        seen.Add($"stats {stats.Records} {stats.Height} {stats.Nodes} {stats.Lookups}");
        var check = tree.Check();
        seen.Add($"check {check.Problems.Count} problems, {check.Records} records, {check.Nodes} nodes");
        using (BTreeMetrics.Register(tree, "read-only")) seen.Add("registered");

        var list = new PersistentList(seg, headAt, 0);
        seen.Add($"list count {list.Count} empty {list.IsEmpty} head 0x{list.Head:X} tail 0x{list.Tail:X}");
        var elems = new List<long>();
        foreach (long x in list) elems.Add(x);
        var backward = new List<long>();
        foreach (long x in list.Backward) backward.Add(x);
        backward.Reverse();
        Assert.Equal(elems, backward);
        seen.Add("list " + string.Join(",", elems.Select(x => $"0x{x:X}")));
        seen.Add($"next 0x{list.Next(elems[0]):X} prev 0x{list.Prev(elems[^1]):X} contains {list.Contains(elems[2])}");
        seen.Add($"list check {string.Join(";", list.Check())}");

        var segCheck = SegmentCheck.Run(seg, [tree], [headAt, .. elems]);
        seen.Add("segment check " + segCheck);
        seen.Add($"last tx {seg.LastTxId}");
        return seen;
    });

    private static DomainOptions On(SimStorage? sim, string? dir, bool readOnly)
    {
        var o = sim is null ? Engines.Options(dir!) : Engines.Sim(sim);
        o.ReadOnly = readOnly;
        o.CreateIfMissing = false;
        return o;
    }

    // Pins the read-only engine as a reader uses it, on the simulated storage (every operation counted: none) and on a
    // real folder (bytes and mtimes of every file, the folder's listing): open, every read, and close write nothing,
    // and the reads equal those of a writing open of the same image.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Every_read_of_a_read_only_engine_equals_a_writing_open_s_and_nothing_is_written(bool real)
    {
        var image = await CrashedWithTreeAndList();
        using var dir = new TempDir();
        SimStorage? ro = null;
        Dictionary<string, (byte[], DateTime)>? stamps = null;
        if (real)
        {
            foreach (var name in image.List()) File.WriteAllBytes(Path.Combine(dir.Path, name), image.ReadAll(name));
            File.WriteAllBytes(Path.Combine(dir.Path, BeConstants.LockFileName), []);   // as an engine leaves it
            stamps = Directory.GetFiles(dir.Path).ToDictionary(f => f, f => (File.ReadAllBytes(f), File.GetLastWriteTimeUtc(f)));
        }
        else ro = image.Clone();

        List<string> read;
        await using (var e = await Engines.Open(On(ro, dir.Path, readOnly: true)))
        {
            Assert.True(e.Domain.ReadOnly);
            Assert.True(e.Domain.Recovery.RecordsReplayed > Keys, $"{e.Domain.Recovery.RecordsReplayed} records replayed");
            read = await ReadAll(e.Localities[0]);
            Assert.Equal(0, e.Localities[0].Faults);
        }
        if (ro is not null) Assert.True(ro.OpCount == 0, ro.OpCount == 0 ? "" : $"{ro.OpCount} ops, the first {ro.GetOp(0)}");
        else
        {
            Assert.Equal(stamps!.Keys.Order(), Directory.GetFiles(dir.Path).Order());
            foreach (var (f, (bytes, mtime)) in stamps)
            {
                Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(f)), $"{f} changed");
                Assert.Equal(mtime, File.GetLastWriteTimeUtc(f));
            }
        }

        // The writing open of the same image: the reads a reader gets are the ones an engine gets.
        var rw = image.Clone();
        List<string> written;
        await using (var e = await Engines.Open(On(rw, null, readOnly: false))) written = await ReadAll(e.Localities[0]);
        Assert.True(rw.OpCount > 0);   // it wrote (placing, checkpoint): the counts above could tell
        Assert.Equal(written, read);
        Assert.Contains($"tree count {Keys} ", read[1]);
        Assert.Contains($"list count {Elements} ", string.Join("\n", read));
    }

    // Every change goes through a transaction, and a read-only domain opens none: the refusal names the domain and says
    // why, comes at the begin (nothing captured, no id taken, no counter moved), and the locality goes on serving reads.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_change_is_refused_at_the_begin_naming_the_domain_and_the_locality_keeps_serving(bool real)
    {
        var image = await CrashedWithTreeAndList();
        using var dir = new TempDir();
        SimStorage? ro = null;
        if (real) foreach (var name in image.List()) File.WriteAllBytes(Path.Combine(dir.Path, name), image.ReadAll(name));
        else ro = image.Clone();
        await using var e = await Engines.Open(On(ro, dir.Path, readOnly: true));
        var loc = e.Localities[0];
        var before = await ReadAll(loc);
        var statsBefore = await loc.RunAsync(() => loc.Segment!.TxStats);
        var domainBefore = e.Domain.Stats;   // log space used and reserved among them

        var begin = await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            seg.TryGetRoot(TreeRoot, out long at);
            var tree = Tree.Open(seg, at);
            using var tx = await seg.BeginAsync(tree.InsertCredit(4, 4));
            tree.Insert(tx, Key(Keys + 1), [1, 2, 3, 4]);
            await tx.Close();
        }));
        Assert.Contains(e.Domain.Location, begin.Message);
        Assert.Contains("read-only", begin.Message);
        var tryBegin = await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync(() => loc.Segment!.TryBegin(TxCredit.Region(8), out _)));
        Assert.Contains(e.Domain.Location, tryBegin.Message);
        Assert.Contains("read-only", tryBegin.Message);
        // A tool's own transactions are refused the same way (a whole-tree delete, a load).
        await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync(async () =>
        {
            loc.Segment!.TryGetRoot(TreeRoot, out long at);
            await Tree.Open(loc.Segment!, at).DeleteAllAsync();
        }));
        // A dump is a read and works; loading it back is a change and is refused as the begin refuses, with no root added.
        var load = await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            seg.TryGetRoot(TreeRoot, out long at);
            var saved = new MemoryStream();
            Assert.Equal(Keys, await BTreeDump.SaveAsync(Tree.Open(seg, at), saved));
            saved.Position = 0;
            await BTreeDump.LoadAsync(saved, seg, null, "copy");
        }));
        Assert.Contains("read-only", load.Message);

        Assert.Equal(before, await ReadAll(loc));
        Assert.Equal(statsBefore, await loc.RunAsync(() => loc.Segment!.TxStats));
        Assert.Equal(domainBefore, e.Domain.Stats);
        Assert.Equal(0, loc.Faults);
        if (ro is not null) Assert.Equal(0, ro.OpCount);
    }
}
