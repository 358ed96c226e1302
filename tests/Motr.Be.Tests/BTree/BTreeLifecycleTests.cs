using Motr.Be.BTree;
using Motr.Be.Segments;
using Tree = Motr.Be.BTree.BTree;
using static Motr.Be.Tests.BTree.Ops;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// A tree object kept past its tree's life, its engine's life, or used off its locality: each use is refused with
/// a clear exception instead of corrupting another tree or faulting the process (found by a helper's probe).
/// </summary>
public class BTreeLifecycleTests
{
    private static readonly BTreeConfig Small = new() { NodeSize = 512 };

    [Fact]
    public async Task A_cursor_whose_last_key_was_deleted_moves_back_to_the_key_before()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Create(seg, Small);
            for (ulong k = 1; k <= 3; k++) await Insert(t, U64(k), U64(k));
            var c = t.OpenCursor();
            Assert.True(c.SeekLast());
            await Delete(t, U64(3));
            var ex = Assert.Throws<InvalidOperationException>(() => c.Key.ToArray());
            Assert.Contains("was deleted; move the cursor", ex.Message);
            Assert.True(c.MovePrev(), "the cursor lost its place when its key was the last one");
            Assert.Equal(U64(2), c.Key.ToArray());
            Assert.True(c.MovePrev());
            Assert.Equal(U64(1), c.Key.ToArray());

            // And forward: past the deleted last key there is nothing.
            Assert.True(c.SeekLast());
            await Delete(t, U64(2));
            Assert.Throws<InvalidOperationException>(() => c.Value.ToArray());
            Assert.False(c.MoveNext());
        });
    }

    [Fact]
    public async Task A_destroyed_tree_object_refuses_every_use_and_never_touches_a_tree_made_in_its_place()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var a = await Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 }, "a");
            var twin = Tree.Open(seg, a.Offset);   // a second object on the same tree
            var cursor = a.OpenCursor();
            await Insert(a, U64(1), U64(1));
            Assert.True(cursor.SeekFirst());
            await Delete(a, U64(1));
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit))
            {
                a.Destroy(tx);
                await tx.Close();
            }
            var gone = Assert.Throws<ObjectDisposedException>(() => a.Count);
            Assert.Contains($"b+tree 0x{a.Offset:X}", gone.Message);
            Assert.Contains("was destroyed", gone.Message);
            Assert.Throws<ObjectDisposedException>(() => a.Lookup(U64(1), out _));
            Assert.Throws<ObjectDisposedException>(() => cursor.SeekFirst());
            Assert.Throws<ObjectDisposedException>(() => twin.Count);

            // A new tree of another format at the same place: the old objects must not apply their format to it.
            var b = await Create(seg, Small, "b");
            Assert.Equal(a.Offset, b.Offset);
            for (ulong k = 10; k < 15; k++) await Insert(b, U64(k), new byte[20]);
            using (var tx = await seg.BeginAsync(TxCreditFor(b)))
            {
                Assert.Throws<ObjectDisposedException>(() => a.Insert(tx, U64(3), U64(0xAAAA)));
                var other = Assert.Throws<ObjectDisposedException>(() => twin.Insert(tx, U64(3), U64(0xAAAA)));
                Assert.Contains("another tree made at its place", other.Message);
                tx.Abort();
            }
            Assert.Equal(5, b.Count);
            AssertHealthy(b);
        });
    }

    [Fact]
    public async Task A_stale_object_is_refused_even_by_a_tree_of_the_same_shape_or_after_its_space_was_reused()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var fixedConfig = new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 };
            var a = await Create(seg, fixedConfig, "a");
            var twin = Tree.Open(seg, a.Offset);
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit)) { a.Destroy(tx); await tx.Close(); }
            // The same key size, value size and leaf format; only the record checksums differ (a review found
            // the object accepted, and its insert corrupted the new tree). The creation stamp tells them apart.
            var b = await Create(seg, fixedConfig with { RecordChecksums = true }, "b");
            Assert.Equal(a.Offset, b.Offset);
            using (var tx = await seg.BeginAsync(b.InsertCredit(8, 8)))
            {
                Assert.Throws<ObjectDisposedException>(() => twin.Insert(tx, U64(1), U64(2)));
                tx.Abort();
            }
            AssertHealthy(b);

            // The header's place freed and reused for plain data: still "destroyed", not corruption.
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit)) { b.Destroy(tx); await tx.Close(); }
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit + Motr.Be.Tx.TxCredit.Region(128)))
            {
                long blk = seg.Allocator.Alloc(tx, 128, 64);
                Assert.Equal(a.Offset, blk);
                tx.Capture(blk, 128).Fill(0x5A);
                await tx.Close();
            }
            var ex = Assert.Throws<ObjectDisposedException>(() => twin.Count);
            Assert.Contains("was destroyed", ex.Message);
        });
    }

    private static Motr.Be.Tx.TxCredit TxCreditFor(Tree t) => t.InsertCredit(8, 8);

    [Fact]
    public async Task Trees_cursors_lists_and_the_allocator_of_a_closed_engine_throw_instead_of_faulting_the_process()
    {
        await using var h = await TreeHost.Start();
        Tree t = null!;
        BTreeCursor c = null!;
        Segment seg = null!;
        await h.Run(async s =>
        {
            seg = s;
            t = await Create(s, Small);
            for (ulong k = 1; k <= 100; k++) await Insert(t, U64(k), new byte[30]);
            c = t.OpenCursor();
            Assert.True(c.SeekFirst());
        });
        await h.Close();
        // Before, each of these read unmapped memory: AccessViolationException, and the test host died.
        Assert.Throws<ObjectDisposedException>(() => t.Count);
        Assert.Throws<ObjectDisposedException>(() => t.Lookup(U64(5), out _));
        Assert.Throws<ObjectDisposedException>(() => c.Key.ToArray());
        Assert.Throws<ObjectDisposedException>(() => c.MoveNext());
        Assert.Throws<ObjectDisposedException>(() => seg.Allocator.Check());
        // Readers and tools that check the owner thread first: a closed segment is what they must report, not the thread.
        Assert.Throws<ObjectDisposedException>(() => Motr.Be.BTree.BTree.Open(seg, t.Offset));
        Assert.Throws<ObjectDisposedException>(() => Motr.Be.Segments.SegmentCheck.Run(seg, [t]));
        var ex = Assert.Throws<ObjectDisposedException>(() => seg.Size);
        Assert.Contains("is closed", ex.Message);
        Assert.False(seg.IsOpen);
    }

    [Fact]
    public async Task Counters_read_off_the_locality_while_the_engine_closes_throw_instead_of_faulting()
    {
        // A review found the read racing the unmap: the header read after the closed check hit unmapped memory and
        // the process died. Each round closes an engine under a thread that reads the counters without pause.
        for (int round = 0; round < 10; round++)
        {
            var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 4 << 20);
            var t = await h.Run(async seg =>
            {
                var tree = await Create(seg, Small);
                for (ulong k = 0; k < 20; k++) await Insert(tree, U64(k), new byte[10]);
                return tree;
            });
            Exception? ended = null;
            long reads = 0;
            var reader = new Thread(() =>
            {
                try
                {
                    while (true)
                    {
                        if (t.Count != 20 || t.Stats.Records != 20) throw new InvalidOperationException("a torn read");
                        reads++;
                    }
                }
                catch (Exception e) { ended = e; }
            });
            reader.Start();
            while (Volatile.Read(ref reads) == 0) await Task.Delay(1);
            await h.DisposeAsync();
            Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
            Assert.IsType<ObjectDisposedException>(ended);
        }
    }

    [Fact]
    public async Task Tree_operations_off_the_segments_locality_are_refused()
    {
        await using var h = await TreeHost.Start();
        var t = await h.Run(async seg =>
        {
            var tree = await Create(seg, Small);
            for (ulong k = 1; k <= 50; k++) await Insert(tree, U64(k), new byte[30]);
            return tree;
        });
        // From the test's thread, while the locality runs: each would race the owner (Check even seals its group).
        Assert.Contains("owner thread", Assert.Throws<InvalidOperationException>(() => t.Lookup(U64(5), out _)).Message);
        Assert.Throws<InvalidOperationException>(() => t.Check());
        Assert.Equal(50, t.Count);   // the header's counters may be read from anywhere (monitoring does)
        Assert.Equal(50, t.Stats.Records);
        Assert.Throws<InvalidOperationException>(() => t.OpenCursor().SeekFirst());
        // Opening reads the header and marks it verified in the segment's map (another object on the same tree).
        Assert.Contains("owner thread", Assert.Throws<InvalidOperationException>(() => Motr.Be.BTree.BTree.Open(t.Segment, t.Offset)).Message);
        // A transaction opened on the locality, then used from another thread.
        await h.Run(async seg =>
        {
            using var tx = await seg.BeginAsync(t.InsertCredit(8, 30));
            var off = await Task.Run(() => Record.Exception(() => t.Insert(tx, U64(1000), new byte[30])));
            Assert.IsType<InvalidOperationException>(off);
            Assert.Equal(0, tx.Used.Regions);
            tx.Abort();
            Assert.Equal(50, t.Count);
            AssertHealthy(t);
        });
    }
}
