using Motr.Be.Segments;
using Motr.Be.Storage;
using static Motr.Be.Tests.TestSupport.Threads;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// The transaction and segment-roots public contract at its edges: a transaction of another segment, short of credit
/// or of an earlier life, savepoints rolled back past, the engine's own header fields, bad sizes and names, the owner
/// thread. Each misuse is refused with a clear error, nothing persistent is damaged and the transaction is left as it was.
/// </summary>
public sealed class TxSegmentContractTests
{
    private const long Off = Engines.DataStart + 256;

    [Fact]
    public async Task Roots_and_Grow_given_a_transaction_of_another_segment_are_refused_changing_neither()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 2)))
        {
            var loc = e.Localities[0];
            var seg0 = loc.Segment!;
            var seg1 = e.Localities[1].Segment!;
            long size0 = seg0.Size, size1 = await e.Localities[1].RunAsync(() => seg1.Size);
            await loc.RunAsync(async () =>
            {
                using (var tx = await seg0.BeginAsync(Segment.RootCredit))
                {
                    seg0.SetRoot(tx, "a", 4096);
                    await tx.Close();
                }
                using var tx2 = await seg0.BeginAsync(Segment.RootCredit * 2 + Segment.GrowCredit);
                // Before: seg1's free slot 0 was found, then seg0's slot 0 captured and written: "a" became "b" in seg0.
                var ex = Assert.Throws<BeException>(() => seg1.SetRoot(tx2, "b", 8192));
                Assert.Contains("on segment 1, not on this segment", ex.Message);
                Assert.Throws<BeException>(() => seg1.RemoveRoot(tx2, "a"));
                // Before: seg1's memory was committed and seg0's Size captured and set to the new size, which seg0 never
                // committed: the next read past the old end faulted the process.
                Assert.Throws<BeException>(() => seg1.Grow(tx2, size1 * 2));
                Assert.Equal(TxCredit.Zero, tx2.Used);
                Assert.Equal(size0, seg0.Size);
                await tx2.Close();
            });
            Assert.Equal(size1, await e.Localities[1].RunAsync(() => seg1.Size));
            storage = storage.Clone();
        }
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 2)))
        {
            var roots = await e.Localities[0].RunAsync(() => e.Localities[0].Segment!.Roots());
            Assert.Equal([new KeyValuePair<string, long>("a", 4096)], roots);
        }
    }

    [Fact]
    public async Task SetRoot_and_RemoveRoot_short_of_the_checksum_credit_capture_nothing()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            var seg = loc.Segment!;
            await loc.RunAsync(async () =>
            {
                using (var tx = await seg.BeginAsync(Segment.RootCredit))
                {
                    seg.SetRoot(tx, "kept", 4096);
                    await tx.Close();
                }
                // Enough for the slot but not for the roots block's checksum. Before: the slot was captured and changed,
                // then the checksum refused; a caller that went on to close left the block with a stale CRC, and the
                // segment no longer opened.
                using var tx2 = await seg.BeginAsync(TxCredit.Region(64));
                Assert.Throws<TxUsageException>(() => seg.SetRoot(tx2, "new", 8192));
                Assert.Throws<TxUsageException>(() => seg.RemoveRoot(tx2, "kept"));
                Assert.Equal(TxCredit.Zero, tx2.Used);
                await tx2.Close();
            });
            storage = storage.Clone();
        }
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var roots = await e.Localities[0].RunAsync(() => e.Localities[0].Segment!.Roots());
            Assert.Equal([new KeyValuePair<string, long>("kept", 4096)], roots);
        }
    }

    [Fact]
    public async Task Grow_refuses_a_negative_size_and_reports_a_size_past_any_limit_as_not_grown()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            long size = seg.Size;
            using var tx = await seg.BeginAsync(Segment.GrowCredit);
            // Before: rounding long.MaxValue up to a page overflowed to a negative size, "already reached": true, not grown.
            Assert.False(seg.Grow(tx, long.MaxValue));
            Assert.False(seg.Grow(tx, long.MaxValue - 4096));
            Assert.Equal("newSize", Assert.Throws<ArgumentOutOfRangeException>(() => seg.Grow(tx, -1)).ParamName);
            Assert.Equal(size, seg.Size);
            Assert.Equal(TxCredit.Zero, tx.Used);
            Assert.True(seg.Grow(tx, size + 1));
            Assert.Equal(size + 4096, seg.Size);
            await tx.Close();
        });
    }

    [Fact]
    public async Task A_savepoint_of_an_earlier_life_of_the_pooled_transaction_is_refused()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            var t1 = await seg.BeginAsync(new TxCredit(8, 1024));
            t1.Capture<long>(Off) = 1;
            t1.DeferChecksum(Off + 512, 64, 60);
            var sp = t1.Savepoint();
            t1.Dispose();                                   // aborted, back to the pool
            using var t2 = await seg.BeginAsync(new TxCredit(8, 1024));
            Assert.Same(t1, t2);                            // the same object: what made the old savepoint look like its own
            t2.Capture<long>(Off + 8) = 2;
            t2.Capture<long>(Off + 16) = 3;
            var used = t2.Used;
            // Before: accepted, rolled back to one region and revived the first life's checksum mark.
            Assert.Throws<TxUsageException>(() => t2.RollbackTo(sp));
            Assert.Equal(used, t2.Used);
            Assert.Equal((2L, 3L), (seg.At<long>(Off + 8), seg.At<long>(Off + 16)));
            await t2.Close();
        });
    }

    [Fact]
    public async Task A_savepoint_rolled_back_past_is_refused_even_once_the_transaction_has_grown_again()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
            var sp1 = tx.Savepoint();
            tx.Capture<long>(Off) = 1;
            var sp2 = tx.Savepoint();                       // after the 8-byte capture
            tx.RollbackTo(sp1);
            tx.Capture(Off + 64, 32).Fill(7);                // another, longer capture in the same place of the list
            var used = tx.Used;
            // Before: accepted (one region then, one now): the tx's undo length was set to 8 while the 32-byte capture's
            // old bytes ran past it, so the next capture overwrote them and an abort restored garbage.
            Assert.Throws<TxUsageException>(() => tx.RollbackTo(sp2));
            Assert.Equal(used, tx.Used);
            tx.Capture<long>(Off + 128) = 9;
            tx.Abort();
            Assert.True(seg.Bytes(Off, 256).IndexOfAnyExcept((byte)0) < 0);
        });
    }

    [Fact]
    public async Task The_engines_geometry_block_is_neither_captured_nor_checksummed_by_a_user()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            long size = seg.Size;
            using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
            // Before: allowed; a Size written past the committed memory faulted the process at the next read there.
            Assert.Throws<TxUsageException>(() => tx.Capture<long>(SegmentHeader.GeometryOffset));
            Assert.Throws<TxUsageException>(() => tx.Capture(SegmentHeader.GeometryOffset + 24, 16));
            Assert.Throws<TxUsageException>(() => tx.Capture(SegmentHeader.StaticLength - 8, 16));
            // A checksum whose field lands on Size would be written there at seal.
            Assert.Throws<TxUsageException>(() => tx.DeferChecksum(SegmentHeader.GeometryOffset, 64, 0));
            Assert.Throws<TxUsageException>(() => tx.CancelChecksum(SegmentHeader.GeometryOffset));
            Assert.Equal(TxCredit.Zero, tx.Used);
            Assert.Throws<TxUsageException>(() => tx.Capture<long>(SegmentHeader.GeometryOffset + SegmentHeader.GeometryLength)); // the header's reserved bytes: the engine's too
            Assert.Equal(TxCredit.Zero, tx.Used);
            tx.Capture(SegmentHeader.UserStart, 8); // the heap's start: allowed (read back unchanged)
            Assert.True(seg.Grow(tx, size + 1));            // the engine's own change of Size still works
            await tx.Close();
            Assert.Equal(size + 4096, seg.Size);
        });
    }

    /// <summary>
    /// The rest of the header below the heap — the allocator's state and the roots block — is the engine's as well:
    /// each is guarded by a CRC the engine recomputes only when it changes the block itself. Before: a user's capture
    /// there (changing bytes without the block's own deferred checksum), a checksum with another CRC field, or a cancel
    /// of the engine's checksum was accepted; the group sealed with a stale CRC and the segment refused to open again.
    /// Now each is refused naming the offset and the block, nothing is recorded, and the segment reopens.
    /// </summary>
    [Fact]
    public async Task The_allocators_state_and_the_roots_block_are_neither_captured_nor_checksummed_by_a_user()
    {
        const long AllocAt = SegmentHeader.AllocatorOffset, RootsAt = SegmentHeader.RootsOffset;
        var misuses = new (string What, long At, string Block, Action<Segment, Transaction> Misuse)[]
        {
            ("capture of the free byte count", AllocAt + 48, "the allocator's state", (_, tx) => tx.Capture<long>(AllocAt + 48) += 16),
            ("capture of a free list head", AllocAt + 104, "the allocator's state", (_, tx) => tx.Capture<long>(AllocAt + 104) = 4096),
            ("capture of a root slot", RootsAt + 64, "the roots block", (_, tx) => tx.Capture(RootsAt + 64, 8).Fill(0x5A)),
            ("capture running on into the heap", SegmentHeader.SizeOf - 8, "the roots block", (_, tx) => tx.Capture(SegmentHeader.SizeOf - 8, 16).Fill(0x5A)),
            ("checksum with another CRC field", RootsAt, "the roots block", (_, tx) => tx.DeferChecksum(RootsAt, SegmentHeader.RootsLength, 0)),
            ("checksum of part of the block", AllocAt, "the allocator's state", (_, tx) => tx.DeferChecksum(AllocAt, 64, 60)),
            ("cancel of the allocator's own checksum", AllocAt, "the allocator's state", (seg, tx) =>
            {
                seg.Allocator.Alloc(tx, 64); // defers the state's checksum in this transaction
                tx.CancelChecksum(AllocAt);
            }),
        };
        foreach (var (what, at, block, misuse) in misuses)
        {
            var storage = new SimStorage();
            Exception? ex = null;
            await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
            {
                var loc = e.Localities[0];
                await loc.RunAsync(async () =>
                {
                    var seg = loc.Segment!;
                    using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit + new TxCredit(8, 1024));
                    TxCredit used = tx.Used;
                    ex = Record.Exception(() => misuse(seg, tx));
                    if (ex is TxUsageException && what.StartsWith("capture")) Assert.Equal(used, tx.Used); // nothing captured
                    await tx.Close();
                });
            }
            // Reopened, the log replayed: every checksum of the header must still hold.
            var reopen = await Record.ExceptionAsync(async () =>
            {
                await using var e = await Engines.Open(Engines.Sim(storage, segments: 1));
            });
            Assert.True(reopen is null, $"{what}: the segment no longer opens: {reopen?.Message}");
            Assert.True(ex is TxUsageException, $"{what}: accepted ({ex?.GetType().Name ?? "no exception"})");
            Assert.Contains($"0x{at:X}", ex!.Message);
            Assert.Contains(block, ex.Message);
        }
    }

    [Fact]
    public async Task Roots_are_refused_off_the_owner_thread_and_after_the_engine_closed()
    {
        var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var seg = e.Localities[0].Segment!;
        // Before: read the segment's memory from any thread, racing the owner's changes.
        Assert.IsType<InvalidOperationException>(OffThread(() => seg.TryGetRoot("a", out _)));
        Assert.IsType<InvalidOperationException>(OffThread(() => seg.Roots()));
        await e.DisposeAsync();
        Assert.IsType<ObjectDisposedException>(OffThread(() => seg.TryGetRoot("a", out _)));
        Assert.IsType<ObjectDisposedException>(OffThread(() => seg.Roots()));
    }

    [Fact]
    public async Task Root_names_that_are_null_or_not_valid_UTF16_are_refused()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(Segment.RootCredit * 2);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.SetRoot(tx, null!, 1)).ParamName);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.TryGetRoot(null!, out _)).ParamName);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.RemoveRoot(tx, null!)).ParamName);
            // Before: a lone surrogate was stored as U+FFFD, so "\uD800" and "\uDC00" named the same root.
            Assert.Throws<BeException>(() => seg.SetRoot(tx, "\uD800", 1));
            Assert.Throws<BeException>(() => seg.TryGetRoot("x\uDC00", out _));
            Assert.Equal(TxCredit.Zero, tx.Used);
            seg.SetRoot(tx, "é" + new string('x', 46), 2);   // 48 UTF-8 bytes: the longest
            Assert.Throws<BeException>(() => seg.SetRoot(tx, "é" + new string('x', 47), 3));
            Assert.True(seg.TryGetRoot("é" + new string('x', 46), out long v) && v == 2);
            await tx.Close();
        });
    }

    [Fact]
    public void Credit_arithmetic_that_overflows_says_which_credit()
    {
        // Before: OverflowException "Arithmetic operation resulted in an overflow.", naming nothing.
        var sum = Assert.Throws<OverflowException>(() => new TxCredit(int.MaxValue, 1) + TxCredit.Region(1));
        Assert.Contains($"{int.MaxValue} regions / 1 bytes", sum.Message);
        var times = Assert.Throws<OverflowException>(() => new TxCredit(1, long.MaxValue / 2 + 1) * 2);
        Assert.Contains("times 2", times.Message);
        Assert.Throws<OverflowException>(() => 3 * new TxCredit(int.MaxValue / 2, 1));
        Assert.Equal(new TxCredit(6, 12), 3 * new TxCredit(2, 4));
    }

    [Fact]
    public async Task A_bad_length_or_checksum_field_is_named_as_such_not_as_a_range_outside_the_segment()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
            // Before: each said "range [...] is outside the capturable space", of a range well inside it.
            Assert.Contains("crcOffset 64", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(Off, 64, 64)).Message);
            Assert.Contains("crcOffset -4", Assert.Throws<TxUsageException>(() => tx.DeferPlacedChecksum(Off, 64, -4, 0x1234)).Message);
            Assert.Contains("length 2", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(Off, 2, 0)).Message);
            Assert.Contains("length 0", Assert.Throws<TxUsageException>(() => tx.Capture(Off, 0)).Message);
            Assert.Contains("length -8", Assert.Throws<TxUsageException>(() => tx.Capture(Off, -8)).Message);
            Assert.Contains("outside", Assert.Throws<TxUsageException>(() => tx.Capture(seg.Size - 4, 8)).Message);
            Assert.Equal(TxCredit.Zero, tx.Used);
            await tx.Close();
        });
    }

    [Fact]
    public async Task Savepoint_and_RollbackTo_off_the_owner_thread_are_refused_even_with_only_marks_to_drop()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
            var sp = tx.Savepoint();
            tx.DeferChecksum(Off + 512, 64, 60);
            var used = tx.Used;
            // Before: both went ahead on the other thread, changing the transaction's marks and counters under its owner.
            Assert.IsType<InvalidOperationException>(OffThread(() => tx.RollbackTo(sp)));
            Assert.IsType<InvalidOperationException>(OffThread(() => tx.Savepoint()));
            Assert.Equal(used, tx.Used);
            tx.RollbackTo(sp);
            Assert.Equal(TxCredit.Zero, tx.Used);
            await tx.Close();
        });
    }
}
