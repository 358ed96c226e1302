using static Motr.Be.Tests.TestSupport.Threads;
using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tests.List;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Alloc;

/// <summary>
/// The allocator's public contract at its edges: the owner thread, the transaction it is given (null, of another
/// segment, ended, aborted, short of credit), an allocator used after its engine closed, a walk used after a change.
/// </summary>
public sealed class AllocatorContractTests
{
    private static readonly TxCredit A = Allocator.AllocCredit;
    private static readonly TxCredit F = Allocator.FreeCredit;
    private static readonly TxCredit Big = A * 4 + F * 4 + TxCredit.Region(64);

    private static async Task<long> AllocOn(Segment seg, long size)
    {
        using var tx = await seg.BeginAsync(A);
        long off = seg.Allocator.Alloc(tx, size);
        _ = tx.Close();
        return off;
    }

    [Fact]
    public async Task Allocator_members_off_the_segments_locality_are_refused()
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        var seg = loc.Segment!;
        var alloc = await loc.RunAsync(() => Task.FromResult(seg.Allocator));
        long a = await loc.RunAsync(() => AllocOn(seg, 100));
        long b = await loc.RunAsync(() => AllocOn(seg, 200));

        // From the test's thread, while the locality runs: every read races the owner's changes, so all are refused.
        void Refused(Action op, string what)
        {
            var ex = Assert.Throws<InvalidOperationException>(op);
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains(what, ex.Message);
            Assert.Contains("owner thread", ex.Message);
        }
        Refused(() => _ = alloc.UsedBytes, "allocator used-bytes");
        Refused(() => _ = alloc.FreeBytes, "allocator free-bytes");
        Refused(() => alloc.GetStats(), "allocator stats");
        Refused(() => alloc.Check(), "allocator check");
        Refused(() => alloc.LoadAndVerify(), "allocator verify");
        Refused(() => alloc.UsableSize(a), "allocator usable-size");
        Refused(() => { foreach (var _ in alloc.AllocatedBlocks()) { } }, "allocator walk");
        Refused(() => alloc.GrowthAllowed = false, "allocator growth");
        Refused(() => _ = seg.Allocator, "allocator");

        await loc.RunAsync(async () =>
        {
            Assert.True(alloc.GrowthAllowed);
            // A walk started on the locality and moved from another thread.
            using var e = alloc.AllocatedBlocks().GetEnumerator();
            Assert.True(e.MoveNext());
            Assert.IsType<InvalidOperationException>(OffThread(() => e.MoveNext()));

            // A transaction opened (and already changed) on the locality, then used from another thread: the
            // transaction checks the thread only at its first change, so the allocator must check it itself.
            using var tx = await seg.BeginAsync(Big);
            tx.Capture<long>(b) = 7;
            var used = tx.Used;
            long usedBytes = alloc.UsedBytes;
            var ops = new Action[]
            {
                () => alloc.TryAlloc(tx, 64, 8, out _), () => alloc.Alloc(tx, 64), () => alloc.Alloc(tx, 64, 4096),
                () => alloc.Free(tx, a),
            };
            foreach (var op in ops)
            {
                var off = OffThread(op); // blocking, not awaiting: the transaction must stay open in this turn
                Assert.IsType<InvalidOperationException>(off);
                Assert.Contains("owner thread", off!.Message);
                Assert.Equal(used, tx.Used);
                Assert.Equal(usedBytes, alloc.UsedBytes);
            }
            tx.Abort();
            Assert.Equal(112 + 208, alloc.UsedBytes);
            Assert.Empty(alloc.Check());
        });
    }

    [Fact]
    public async Task An_allocator_used_after_its_engine_closed_throws_ObjectDisposedException()
    {
        using var dir = new ListDomain();
        var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        var seg = loc.Segment!;
        var alloc = await loc.RunAsync(() => Task.FromResult(seg.Allocator));
        long a = await loc.RunAsync(() => AllocOn(seg, 100));
        await loc.RunAsync(() => AllocOn(seg, 100));
        var (walk, tx) = await loc.RunAsync(async () =>
        {
            var e = alloc.AllocatedBlocks().GetEnumerator();
            Assert.True(e.MoveNext());
            var t = await seg.BeginAsync(A);   // kept too long too: closed, then used after the engine closed
            _ = t.Close();
            return (e, t);
        });
        await engine.DisposeAsync();

        // Kept too long: the segment's memory is gone. Each use says so, never touches the unmapped memory.
        void Gone(Action op)
        {
            var ex = Assert.Throws<ObjectDisposedException>(op);
            Assert.Contains("closed", ex.Message);
        }
        Gone(() => _ = alloc.UsedBytes);
        Gone(() => _ = alloc.FreeBytes);
        Gone(() => alloc.GetStats());
        Gone(() => alloc.Check());
        Gone(() => alloc.LoadAndVerify());
        Gone(() => alloc.UsableSize(a));
        Gone(() => { foreach (var _ in alloc.AllocatedBlocks()) { } });
        Gone(() => walk.MoveNext());
        Gone(() => alloc.TryAlloc(tx, 64, 8, out _));
        Gone(() => alloc.TryAlloc(tx, 0, 8, out _));
        Gone(() => alloc.Alloc(tx, 64));
        Gone(() => alloc.Free(tx, a));
        Gone(() => _ = seg.Allocator);
        Assert.Same(seg, alloc.Segment);   // the object's own fields stay readable
    }

    [Fact]
    public Task A_transaction_the_engine_aborted_at_its_turns_end_is_refused_saying_why() => OnLocality(async seg =>
    {
        var alloc = seg.Allocator;
        var tx = await seg.BeginAsync(Big);
        long a = alloc.Alloc(tx, 100);
        await Task.Yield();   // the turn ends with the transaction open: the engine aborts it
        Assert.Equal(TxState.Aborted, tx.State);
        foreach (var op in new Action[] { () => alloc.Alloc(tx, 100), () => alloc.Free(tx, a) })
        {
            var ex = Assert.Throws<TxUsageException>(op);
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains("invariant 1", ex.Message);   // why it is aborted, not only that it is
        }
        tx.Dispose();
        Assert.Equal(0, alloc.UsedBytes);
        Assert.Empty(alloc.Check());
    });

    [Fact]
    public Task A_bad_transaction_is_refused_before_the_arguments_are_looked_at() => OnLocality(async seg =>
    {
        var alloc = seg.Allocator;
        // Null: ArgumentNullException whatever the size, as for a valid size (not a status, not a BeException on the size).
        Assert.Throws<ArgumentNullException>(() => alloc.TryAlloc(null!, 0, 8, out _));
        Assert.Throws<ArgumentNullException>(() => alloc.TryAlloc(null!, 16, 3, out _));
        Assert.Throws<ArgumentNullException>(() => alloc.Alloc(null!, -1));
        // Ended: TxUsageException, not InvalidSize.
        var tx = await seg.BeginAsync(A);
        _ = tx.Close();
        var ex = Assert.Throws<TxUsageException>(() => alloc.TryAlloc(tx, 0, 8, out _));
        Assert.Contains("open transaction", ex.Message);
        Assert.Throws<TxUsageException>(() => alloc.Alloc(tx, 16, 3));
        Assert.Equal(0, alloc.UsedBytes);
    });

    [Fact]
    public async Task A_transaction_of_another_segment_is_refused_before_it_captures_anything()
    {
        using var dir = new ListDomain(segments: 2);
        await using var engine = await dir.OpenAsync();
        var loc0 = engine.Localities[0];
        var seg0 = loc0.Segment!;
        long a = await loc0.RunAsync(() => AllocOn(seg0, 100));
        // A transaction of segment 2, opened on its own locality, handed to segment 1's locality.
        var seg1 = engine.Localities[1].Segment!;
        var other = await engine.Localities[1].RunAsync(async () => await seg1.BeginAsync(Big));
        await loc0.RunAsync(() =>
        {
            foreach (var op in new Action[] { () => seg0.Allocator.Alloc(other, 100), () => seg0.Allocator.Free(other, a) })
            {
                var ex = Assert.Throws<TxUsageException>(op);
                Assert.Contains("segment 1", ex.Message);
                Assert.Contains("transaction of segment 2", ex.Message);
                Assert.Equal(TxCredit.Zero, other.Used);
            }
            Assert.Equal(112, seg0.Allocator.UsedBytes);
            return Task.CompletedTask;
        });
        await engine.Localities[1].RunAsync(() => { other.Dispose(); return Task.CompletedTask; });
    }

    [Fact]
    public Task A_transaction_short_of_credit_is_refused_leaving_it_as_it_was() => OnLocality(async seg =>
    {
        var alloc = seg.Allocator;
        long a = await AllocOn(seg, 100);
        await AllocOn(seg, 100);
        foreach (var less in new[] { new TxCredit(1, 0), new TxCredit(0, 1) })
        {
            foreach (bool free in new[] { false, true })
            {
                var need = free ? F : A;
                // The transaction already holds a change of its own; the operation's credit is one region or byte short.
                using var tx = await seg.BeginAsync(TxCredit.Region(8) + new TxCredit(need.Regions - less.Regions, need.Bytes - less.Bytes));
                tx.Capture<long>(a) = 7;
                var used = tx.Used;
                var ex = Assert.Throws<TxUsageException>(() => { if (free) alloc.Free(tx, a); else alloc.Alloc(tx, 100); });
                Assert.Contains("segment 1", ex.Message);
                Assert.Equal(used, tx.Used);
                tx.Abort();
            }
        }
        Assert.Equal(224, alloc.UsedBytes);
        Assert.Empty(alloc.Check());
    });

    [Fact]
    public Task A_walk_used_after_the_heap_changed_throws_InvalidOperationException() => OnLocality(async seg =>
    {
        var alloc = seg.Allocator;
        long a = await AllocOn(seg, 100), b = await AllocOn(seg, 100), c = await AllocOn(seg, 100);

        // Freed under the walk: b's header, left behind inside the chunk a and b coalesced into, still reads as a
        // used block; the walk must not hand it out as allocated.
        using (var e = alloc.AllocatedBlocks().GetEnumerator())
        {
            Assert.True(e.MoveNext());
            Assert.Equal(a, e.Current.Offset);
            using (var tx = await seg.BeginAsync(F * 2)) { alloc.Free(tx, a); alloc.Free(tx, b); _ = tx.Close(); }
            var ex = Assert.Throws<InvalidOperationException>(() => e.MoveNext());
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains("changed", ex.Message);
        }

        // Undone under the walk: an abort changes the heap without the allocator's knowledge.
        using (var tx = await seg.BeginAsync(A))
        {
            alloc.Alloc(tx, 100);
            using var e = alloc.AllocatedBlocks().GetEnumerator();
            Assert.True(e.MoveNext());
            tx.Abort();
            Assert.Throws<InvalidOperationException>(() => e.MoveNext());
        }

        // A walk over an unchanged heap goes on to the end, and a new walk sees the change.
        var blocks = new List<long>();
        foreach (var blk in alloc.AllocatedBlocks()) blocks.Add(blk.Offset);
        Assert.Equal([c], blocks);
        Assert.Empty(alloc.Check());
    });

    [Fact]
    public Task A_size_no_segment_of_this_limit_can_hold_is_named_as_such_not_as_a_passing_shortage() => OnLocality(async seg =>
    {
        var alloc = seg.Allocator;
        foreach (long size in new[] { seg.MaxSize, seg.MaxSize - AllocFormat.HeapStart, long.MaxValue })
        {
            using var tx = await seg.BeginAsync(A);
            Assert.Equal(AllocStatus.OutOfSpace, alloc.TryAlloc(tx, size, 8, out long off));
            Assert.Equal(0, off);
            var ex = Assert.Throws<BeException>(() => alloc.Alloc(tx, size));
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains($"cannot allocate {size} bytes", ex.Message);
            Assert.Contains("can never fit", ex.Message);
            Assert.Contains($"{seg.MaxSize}", ex.Message);
            Assert.Equal(TxCredit.Zero, tx.Used);
        }
        // The largest block that can fit is still only out of space for now.
        using (var tx = await seg.BeginAsync(A))
        {
            alloc.GrowthAllowed = false;
            var ex = Assert.Throws<BeException>(() => alloc.Alloc(tx, seg.MaxSize - AllocFormat.HeapStart - AllocFormat.ChunkHeaderSize));
            Assert.DoesNotContain("never", ex.Message);
            Assert.Contains("growth disallowed", ex.Message);
        }
    });

    /// <summary>Opens a one-segment engine and runs <paramref name="body"/> on its locality.</summary>
    private static async Task OnLocality(Func<Segment, Task> body)
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(() => body(loc.Segment!));
    }
}
