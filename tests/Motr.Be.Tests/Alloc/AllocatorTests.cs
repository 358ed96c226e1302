using System.Runtime.InteropServices;
using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Alloc;

public sealed class AllocatorTests
{
    private const int Hdr = AllocFormat.ChunkHeaderSize;
    private static readonly TxCredit A = Allocator.AllocCredit;
    private static readonly TxCredit F = Allocator.FreeCredit;

    private static Task<long> AllocAsync(AllocHost h, long size, int alignment = 8) =>
        h.InTx(A, (tx, a) => a.Alloc(tx, size, alignment));

    private static Task FreeAsync(AllocHost h, long offset) =>
        h.InTx(F, (tx, a) => { a.Free(tx, offset); return 0; });

    private static async Task AssertHealthy(AllocHost h)
    {
        var problems = await h.Run((_, a) => a.Check());
        Assert.Empty(problems);
    }

    [Fact]
    public async Task A_new_segment_is_an_empty_heap_of_wilderness()
    {
        await using var h = await AllocHost.OpenAsync();
        var s = await h.Run((_, a) => a.GetStats());
        Assert.Equal(0, s.UsedBytes);
        Assert.Equal(0, s.UsedChunks);
        Assert.Equal(0, s.FreeChunks);
        Assert.Equal(AllocFormat.HeapStart, s.HeapStart);
        Assert.Equal(AllocFormat.HeapStart, s.HeapTop);
        Assert.Equal(AllocHost.SegmentSize - 4096, s.FreeBytes);
        Assert.Equal(AllocHost.SegmentSize - 4096, s.WildernessBytes);
        Assert.Equal(AllocHost.SegmentSize - 4096, s.LargestFree);
        Assert.Equal(0, s.Fragmentation);
        await AssertHealthy(h);
    }

    [Fact]
    public void Credits_are_the_documented_numbers()
    {
        Assert.Equal(new TxCredit(14, 244), Allocator.AllocCredit);
        Assert.Equal(new TxCredit(12, 168), Allocator.FreeCredit);
    }

    [Fact]
    public void Size_classes_and_bins_are_ordered_and_consistent()
    {
        Assert.Equal(0, AllocFormat.BinOf(48));
        Assert.Equal(1, AllocFormat.BinOf(64));
        Assert.Equal(63, AllocFormat.BinOf(1056));
        Assert.Equal(64, AllocFormat.BinOf(1072));
        Assert.Equal(AllocFormat.BinCount - 1, AllocFormat.BinOf(1L << 50));
        int last = -1;
        for (long size = 48; size < 1 << 22; size += 16)
        {
            int bin = AllocFormat.BinOf(size);
            Assert.True(bin == last || bin == last + 1, $"bin of {size} jumps from {last} to {bin}");
            if (bin != last) Assert.Equal(size, AllocFormat.BinMinChunkSize(bin));
            last = bin;
        }
    }

    [Fact]
    public async Task First_allocations_are_carved_from_the_wilderness_in_order()
    {
        await using var h = await AllocHost.OpenAsync();
        long a = await AllocAsync(h, 1);
        long b = await AllocAsync(h, 100);
        long c = await AllocAsync(h, 1024);
        Assert.Equal(4096 + Hdr, a);
        Assert.Equal(a + 16 + Hdr, b);      // 1 byte rounds up to 16
        Assert.Equal(b + 112 + Hdr, c);     // 100 rounds up to 112
        var (ua, ub, uc) = await h.Run((_, al) => (al.UsableSize(a), al.UsableSize(b), al.UsableSize(c)));
        Assert.Equal((16L, 112L, 1024L), (ua, ub, uc));
        var s = await h.Run((_, al) => al.GetStats());
        Assert.Equal(16 + 112 + 1024, s.UsedBytes);
        Assert.Equal(3, s.UsedChunks);
        Assert.Equal(c + 1024, s.HeapTop);
        Assert.Equal(1, s.UsedChunksByClass[0]);
        Assert.Equal(1, s.UsedChunksByClass[6]);
        Assert.Equal(1, s.UsedChunksByClass[63]);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Every_power_of_two_alignment_from_8_to_a_page_is_honoured()
    {
        await using var h = await AllocHost.OpenAsync();
        var rng = new Random(7);
        var live = new List<(long Off, long Size)>();
        for (int round = 0; round < 3; round++)
        {
            for (int align = 8; align <= 4096; align *= 2)
            {
                foreach (long size in new long[] { 1, 24, 100, 1000, 5000 })
                {
                    long pad = await AllocAsync(h, rng.Next(1, 200));          // shifts the next chunk off any alignment
                    long off = await AllocAsync(h, size, align);
                    Assert.True(off % align == 0, $"offset 0x{off:X} is not aligned to {align}");
                    Assert.True(off % 16 == 0);
                    Assert.True(await h.Run((_, a) => a.UsableSize(off)) >= size);
                    live.Add((off, size));
                    if (rng.Next(2) == 0) await FreeAsync(h, pad);               // leaves holes that later aligned requests split
                }
            }
            // Free half of the aligned blocks so the next round is served from free chunks too.
            for (int i = live.Count - 1; i >= 0; i -= 2)
            {
                await FreeAsync(h, live[i].Off);
                live.RemoveAt(i);
            }
            await AssertHealthy(h);
        }
        var s = await h.Run((_, a) => a.GetStats());
        Assert.True(s.FreeChunks > 0, "aligned requests should have left gap chunks and holes");
    }

    [Fact]
    public async Task Invalid_size_and_alignment_are_statuses_that_change_nothing()
    {
        await using var h = await AllocHost.OpenAsync();
        var results = await h.InTx(A, (tx, a) =>
        {
            var r = new List<(AllocStatus, long)>();
            foreach (var (size, align) in new (long, int)[] { (0, 8), (-5, 8), (10, 0), (10, 3), (10, 24), (10, 8192), (10, -8) })
            {
                var st = a.TryAlloc(tx, size, align, out long off);
                r.Add((st, off));
            }
            Assert.Equal(TxCredit.Zero, tx.Used);
            return r;
        });
        Assert.Equal(
            new[] { AllocStatus.InvalidSize, AllocStatus.InvalidSize, AllocStatus.InvalidAlignment, AllocStatus.InvalidAlignment,
                    AllocStatus.InvalidAlignment, AllocStatus.InvalidAlignment, AllocStatus.InvalidAlignment },
            results.Select(x => x.Item1).ToArray());
        Assert.All(results, x => Assert.Equal(0, x.Item2));
        var ex = await Assert.ThrowsAsync<BeException>(() => h.InTx(A, (tx, a) => a.Alloc(tx, 0)));
        Assert.Contains("cannot allocate 0 bytes", ex.Message);
    }

    [Fact]
    public async Task A_freed_small_block_is_reused_exactly_by_the_same_size_class()
    {
        await using var h = await AllocHost.OpenAsync();
        long x = await AllocAsync(h, 100);
        long guard = await AllocAsync(h, 64);
        long y = await AllocAsync(h, 200);
        await AllocAsync(h, 64);
        await FreeAsync(h, x);
        await FreeAsync(h, y);
        var before = await h.Run((_, a) => a.GetStats());
        Assert.Equal(2, before.FreeChunks);

        long x2 = await AllocAsync(h, 97);           // 97 rounds to 112, x's class
        long y2 = await AllocAsync(h, 200);
        Assert.Equal(x, x2);
        Assert.Equal(y, y2);
        var after = await h.Run((_, a) => a.GetStats());
        Assert.Equal(0, after.FreeChunks);
        Assert.Equal(before.HeapTop, after.HeapTop);    // nothing carved from the wilderness
        Assert.True(guard > x);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task A_large_request_takes_the_smallest_fitting_free_chunk()
    {
        await using var h = await AllocHost.OpenAsync();
        // Three free chunks in the same bin (chunk sizes 2048..2559), separated by guards.
        long c2500 = await AllocAsync(h, 2500);
        await AllocAsync(h, 16);
        long c2100 = await AllocAsync(h, 2100);
        await AllocAsync(h, 16);
        long c2300 = await AllocAsync(h, 2300);
        await AllocAsync(h, 16);
        Assert.Equal(AllocFormat.BinOf(2500 + 12 + Hdr), AllocFormat.BinOf(2112 + Hdr));
        Assert.Equal(AllocFormat.BinOf(2304 + Hdr), AllocFormat.BinOf(2112 + Hdr));
        // List order after these frees: c2100, c2500, c2300 (LIFO): the best fit is the last one.
        await FreeAsync(h, c2300);
        await FreeAsync(h, c2500);
        await FreeAsync(h, c2100);

        long got = await AllocAsync(h, 2200);
        Assert.Equal(c2300, got);
        // 2304 - 2208 = 96 bytes remain: split off as a free chunk right after the block.
        var s = await h.Run((_, a) => a.GetStats());
        Assert.Equal(3, s.FreeChunks);
        Assert.Equal(2208, await h.Run((_, a) => a.UsableSize(got)));

        long got2 = await AllocAsync(h, 2400);   // only c2500 fits
        Assert.Equal(c2500, got2);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Freeing_between_two_free_chunks_coalesces_both_sides()
    {
        await using var h = await AllocHost.OpenAsync();
        long a = await AllocAsync(h, 500);
        long b = await AllocAsync(h, 700);
        long c = await AllocAsync(h, 900);
        long guard = await AllocAsync(h, 50);
        long sa = 512 + Hdr, sb = 704 + Hdr, sc = 912 + Hdr;

        await FreeAsync(h, a);
        await FreeAsync(h, c);
        var two = await h.Run((_, al) => al.GetStats());
        Assert.Equal(2, two.FreeChunks);
        Assert.Equal(sc, two.LargestFreeChunk);
        Assert.Equal(sa + sc, two.FreeChunkBytes);

        await FreeAsync(h, b);
        var one = await h.Run((_, al) => al.GetStats());
        Assert.Equal(1, one.FreeChunks);
        Assert.Equal(sa + sb + sc, one.LargestFreeChunk);
        Assert.Equal(sa + sb + sc, one.FreeChunkBytes);
        Assert.Equal(1, one.UsedChunks);
        Assert.Equal(64, one.UsedBytes);
        await AssertHealthy(h);

        // The merged chunk is reused as a whole: a request for all of it lands at a.
        long big = await AllocAsync(h, sa + sb + sc - Hdr);
        Assert.Equal(a, big);
        await FreeAsync(h, big);

        // Freeing the last block returns everything, free neighbour included, to the wilderness.
        await FreeAsync(h, guard);
        var none = await h.Run((_, al) => al.GetStats());
        Assert.Equal(0, none.FreeChunks);
        Assert.Equal(0, none.UsedChunks);
        Assert.Equal(0, none.UsedBytes);
        Assert.Equal(AllocFormat.HeapStart, none.HeapTop);
        Assert.Equal(0, none.Fragmentation);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Fragmentation_is_one_minus_largest_over_total_free()
    {
        await using var h = await AllocHost.OpenAsync();
        var offs = new List<long>();
        for (int i = 0; i < 10; i++) offs.Add(await AllocAsync(h, 1000));
        for (int i = 0; i < 10; i += 2) await FreeAsync(h, offs[i]);
        var s = await h.Run((_, a) => a.GetStats());
        Assert.Equal(5, s.FreeChunks);
        Assert.Equal(5 * (1008 + Hdr), s.FreeChunkBytes);
        Assert.Equal(s.WildernessBytes, s.LargestFree);
        Assert.Equal(1008 + Hdr, s.LargestFreeChunk);
        Assert.Equal(1 - (double)s.WildernessBytes / (s.WildernessBytes + s.FreeChunkBytes), s.Fragmentation, 12);
        Assert.Equal(5, s.UsedChunksByClass[AllocFormat.BinOf(1008 + Hdr)]);
    }

    [Fact]
    public async Task Exhausted_space_without_growth_is_a_status_and_changes_nothing()
    {
        await using var h = await AllocHost.OpenAsync();
        await h.Run((_, a) => a.GrowthAllowed = false);
        int n = 0;
        while (true)
        {
            var st = await h.InTx(A, (tx, a) => a.TryAlloc(tx, 60_000, 8, out _));
            if (st == AllocStatus.OutOfSpace) break;
            Assert.Equal(AllocStatus.Ok, st);
            n++;
        }
        Assert.Equal((int)((AllocHost.SegmentSize - 4096) / (60_000 + Hdr)), n);
        var before = await h.Run((_, a) => a.GetStats());
        var (status, used, size) = await h.InTx(A, (tx, a) =>
        {
            var s = a.TryAlloc(tx, 60_000, 4096, out long off);
            Assert.Equal(0, off);
            return (s, tx.Used, tx.Segment.Size);
        });
        Assert.Equal(AllocStatus.OutOfSpace, status);
        Assert.Equal(TxCredit.Zero, used);
        Assert.Equal(AllocHost.SegmentSize, size);
        var after = await h.Run((_, a) => a.GetStats());
        Assert.Equal(before.ToString(), after.ToString());
        Assert.Equal(before.HeapTop, after.HeapTop);

        var ex = await Assert.ThrowsAsync<BeException>(() => h.InTx(A, (tx, a) => a.Alloc(tx, 60_000)));
        Assert.Contains("segment 1", ex.Message);
        Assert.Contains("60000 bytes", ex.Message);
        Assert.Contains($"{after.FreeBytes} bytes free", ex.Message);
        Assert.Contains("growth disallowed", ex.Message);

        // Small requests still fit in what is left.
        long small = await AllocAsync(h, 100);
        Assert.True(small > 0);
        await AssertHealthy(h);
    }

    // An aligned block is padded at its end (so the next block of that alignment starts right after it) when the padding
    // is less than a minimal chunk, growing the segment for it if it can. With growth allowed but the memory not to be
    // had (Segment.Grow false: mprotect failing), a block whose unpadded end fits in the segment as it is was refused as
    // out of space: the padding's growth failed and the allocator gave up instead of carving the block without it.
    [Fact]
    public async Task An_aligned_block_that_fits_is_carved_when_growing_for_its_padding_cannot_get_memory()
    {
        await using var h = await AllocHost.OpenAsync();
        await h.Run((seg, _) =>
        {
            seg.Domain.Options.OnWarning = _ => { };
            seg.Memory.CommitFault = _ => 12; // ENOMEM
        });
        long top = (await h.Run((_, a) => a.GetStats())).HeapTop;
        // A filler leaves the heap top 32 past a 64-byte boundary: a 64-aligned block's chunk then starts at the top.
        long filler = ((32 - (top + Hdr)) % 64 + 64) % 64 + 64;
        await AllocAsync(h, filler);
        long newTop = (await h.Run((_, a) => a.GetStats())).HeapTop;
        Assert.Equal(32, newTop % 64);
        // The block ends exactly at the segment's size; its padding would take it 32 bytes past.
        long size = AllocHost.SegmentSize - newTop - Hdr;
        var (status, offset) = await h.InTx(A, (tx, a) => (a.TryAlloc(tx, size, 64, out long off), off));
        Assert.Equal(AllocStatus.Ok, status);
        Assert.Equal(newTop + Hdr, offset);
        var after = await h.Run((seg, a) => (a.GetStats().HeapTop, seg.Size));
        Assert.Equal((AllocHost.SegmentSize, AllocHost.SegmentSize), after);
        await AssertHealthy(h);
    }

    // Segment.Grow captured the size field before it tried to commit the memory, and on a failed commit returned false
    // with the capture left in the transaction: an allocation refused as out of space had used the growth's credit,
    // though "expected failures are statuses, and change nothing" (as they do at the limit, where tx.Used stays zero).
    [Fact]
    public async Task Out_of_space_for_memory_the_process_cannot_get_uses_no_credit()
    {
        await using var h = await AllocHost.OpenAsync();
        await h.Run((seg, _) =>
        {
            seg.Domain.Options.OnWarning = _ => { };
            seg.Memory.CommitFault = _ => 12; // ENOMEM
        });
        var (status, used, size) = await h.InTx(A, (tx, a) => (a.TryAlloc(tx, 2 << 20, 8, out _), tx.Used, tx.Segment.Size));
        Assert.Equal(AllocStatus.OutOfSpace, status);
        Assert.Equal(TxCredit.Zero, used);
        Assert.Equal(AllocHost.SegmentSize, size);
        var grown = await h.InTx(Segment.GrowCredit, (tx, _) => (tx.Segment.Grow(tx, 2 << 20), tx.Used));
        Assert.Equal((false, TxCredit.Zero), grown);
    }

    // TryAlloc's bounded best-fit scan may pass over a fitting free chunk; when the wilderness is short and growth is
    // allowed it grows instead, and only when growth is impossible does it scan every list whole ("out of space means
    // nothing fits"). A growth refused for memory (Segment.Grow false below the limit) answered OutOfSpace at once,
    // with a fitting free chunk in the heap.
    [Fact]
    public async Task A_fitting_free_chunk_past_the_bounded_scan_is_used_when_growth_cannot_get_memory()
    {
        await using var h = await AllocHost.OpenAsync();
        await h.Run((seg, _) => seg.Domain.Options.OnWarning = _ => { });
        long fit = await AllocAsync(h, 2464); // chunk 2496: the fitting one
        await AllocAsync(h, 16);
        var small = new List<long>();
        for (int i = 0; i < Allocator.BinScanLimit + 6; i++)
        {
            small.Add(await AllocAsync(h, 2016)); // chunk 2048: the same list, too small
            await AllocAsync(h, 16);
        }
        long top = (await h.Run((_, a) => a.GetStats())).HeapTop;
        await AllocAsync(h, (AllocHost.SegmentSize - top - Hdr - 256) / 16 * 16); // leaves a wilderness of a few hundred bytes
        await FreeAsync(h, fit); // first: the last of its list
        foreach (long o in small) await FreeAsync(h, o);
        await h.Run((seg, _) => seg.Memory.CommitFault = _ => 12); // ENOMEM
        var (status, offset) = await h.InTx(A, (tx, a) => (a.TryAlloc(tx, 2400, 8, out long off), off));
        Assert.Equal(AllocStatus.Ok, status);
        Assert.Equal(fit, offset);
        Assert.Equal(AllocHost.SegmentSize, await h.Run((seg, _) => seg.Size));
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Growth_extends_the_segment_by_a_quarter_or_what_is_needed_and_persists()
    {
        await using var h = await AllocHost.OpenAsync();
        long a = await AllocAsync(h, 1_200_000);
        long size = await h.Run((seg, _) => seg.Size);
        Assert.Equal(1_310_720, size);                          // max(needed, 1 MiB / 4) past 1 MiB, page rounded
        long b = await AllocAsync(h, 2_500_000);                // needs more than a quarter: grows by what is needed
        long end = b + 2_500_000;
        size = await h.Run((seg, _) => seg.Size);
        Assert.Equal(3_706_880, size);
        Assert.Equal((Math.Max(end, 1_310_720 + 1_310_720 / 4) + 4095) / 4096 * 4096, size);
        Assert.Equal(4096 + Hdr, a);

        // Past the limit: out of space, no growth.
        var st = await h.InTx(A, (tx, al) => al.TryAlloc(tx, 3_000_000, 8, out _));
        Assert.Equal(AllocStatus.OutOfSpace, st);
        Assert.Equal(size, await h.Run((seg, _) => seg.Size));

        // Growth is capped at MaxSize when a quarter would pass it.
        long c = await AllocAsync(h, 10_000);
        Assert.Equal(end + Hdr, c);
        Assert.Equal(AllocHost.SegmentMaxSize, await h.Run((seg, _) => seg.Size));
        await AssertHealthy(h);

        await h.ReopenAsync();
        Assert.Equal(AllocHost.SegmentMaxSize, await h.Run((seg, _) => seg.Size));
        Assert.Equal(1_200_000, await h.Run((_, al) => al.UsableSize(a)));
        Assert.True(await h.Run((_, al) => al.UsableSize(c)) > 0);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Double_free_and_wild_offsets_are_clear_errors_that_change_nothing()
    {
        await using var h = await AllocHost.OpenAsync();
        long a = await AllocAsync(h, 300);
        long b = await AllocAsync(h, 300);
        long c = await AllocAsync(h, 300);
        await AllocAsync(h, 300);
        await FreeAsync(h, b);
        await FreeAsync(h, a);                       // a and b coalesce: b's old header is now stale, inside a free chunk
        long big = await AllocAsync(h, 600);         // reuses the merged chunk: b's stale header sits inside big's data
        Assert.Equal(a, big);
        var stats = await h.Run((_, al) => al.GetStats());

        async Task<string> Refused(long offset)
        {
            var ex = await Assert.ThrowsAsync<BeException>(() => h.InTx(F, (tx, al) =>
            {
                try { al.Free(tx, offset); }
                finally { Assert.Equal(TxCredit.Zero, tx.Used); }
                return 0;
            }));
            Assert.IsNotType<TxUsageException>(ex);
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains($"0x{offset:X}", ex.Message);
            return ex.Message;
        }

        await FreeAsync(h, c);
        Assert.Contains("double free", await Refused(c));
        Assert.Contains("wild", await Refused(a + 16));                  // no header before it
        Assert.Contains("wild", await Refused(a + 8));                   // misaligned
        Assert.Contains("wild", await Refused(12));                      // in the segment header
        Assert.Contains("wild", await Refused(1L << 40));                // far outside
        Assert.Contains("wild", await Refused(stats.HeapTop + 4096));    // in the wilderness
        Assert.Contains("stale header", await Refused(b));               // the stale header inside big's data

        var ex2 = await Assert.ThrowsAsync<BeException>(() => h.Run((_, al) => al.UsableSize(c)));
        Assert.Contains("double free", ex2.Message);

        var after = await h.Run((_, al) => al.GetStats());
        Assert.Equal(stats.UsedBytes - 304, after.UsedBytes);      // only c's legitimate free changed anything
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Abort_restores_chunks_lists_counters_and_size()
    {
        await using var h = await AllocHost.OpenAsync();
        var offs = new List<long>();
        for (int i = 0; i < 20; i++) offs.Add(await AllocAsync(h, 100 + i * 150));
        for (int i = 0; i < 20; i += 3) await FreeAsync(h, offs[i]);
        var before = await h.Run((_, a) => a.GetStats());
        // The state block without its CRC (which is recomputed whenever a group is sealed).
        var headerBefore = await h.Run((seg, _) => seg.Bytes(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorCrcOffset).ToArray());

        await h.InTx(A * 6 + F * 4, (tx, a) =>
        {
            a.Alloc(tx, 50);
            a.Alloc(tx, 700, 1024);
            a.Alloc(tx, 2_000_000);              // grows the segment
            a.Free(tx, offs[1]);
            a.Free(tx, offs[2]);                 // coalesces with offs[1] and offs[3]'s neighbours
            a.Free(tx, offs[19]);
            a.Alloc(tx, 4000, 4096);
            a.Free(tx, offs[10]);
            Assert.True(tx.Segment.Size > AllocHost.SegmentSize);
            Assert.Empty(a.Check());
            return 0;
        }, abort: true);

        var after = await h.Run((_, a) => a.GetStats());
        Assert.Equal(before.ToString(), after.ToString());
        Assert.Equal(before.HeapTop, after.HeapTop);
        Assert.Equal(AllocHost.SegmentSize, after.SegmentSize);
        Assert.Equal(before.UsedChunksByClass, after.UsedChunksByClass);
        var headerAfter = await h.Run((seg, _) => seg.Bytes(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorCrcOffset).ToArray());
        Assert.Equal(headerBefore, headerAfter);
        await AssertHealthy(h);
        // And the structure still works.
        await FreeAsync(h, offs[1]);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task The_worst_cases_use_exactly_the_published_credits()
    {
        await using var h = await AllocHost.OpenAsync();
        // Alloc: an aligned request served from a free chunk that splits on both sides.
        long big = await AllocAsync(h, 20_000);
        await AllocAsync(h, 100);
        await FreeAsync(h, big);
        var (off, allocUsed) = await h.InTx(A, (tx, a) => (a.Alloc(tx, 100, 4096), tx.Used));
        Assert.Equal(8192, off);
        Assert.Equal(Allocator.AllocCredit, allocUsed);
        var s = await h.Run((_, a) => a.GetStats());
        Assert.Equal(2, s.FreeChunks);                  // the leading gap and the trailing remainder

        // Free: both neighbours free, and a chunk after them whose back link changes.
        await using var h2 = await AllocHost.OpenAsync();
        long p = await AllocAsync(h2, 200);
        long c = await AllocAsync(h2, 200);
        long n = await AllocAsync(h2, 300);                  // another class than p, so each unlink empties its list
        await AllocAsync(h2, 200);
        await FreeAsync(h2, p);
        await FreeAsync(h2, n);
        var freeUsed = await h2.InTx(F, (tx, a) => { a.Free(tx, c); return tx.Used; });
        Assert.Equal(Allocator.FreeCredit, freeUsed);
        var s2 = await h2.Run((_, a) => a.GetStats());
        Assert.Equal(1, s2.FreeChunks);
        Assert.Equal(2 * (208 + Hdr) + 304 + Hdr, s2.LargestFreeChunk);
        await AssertHealthy(h);
        await AssertHealthy(h2);
    }

    [Fact]
    public async Task A_transaction_without_enough_credit_is_refused_before_any_change()
    {
        await using var h = await AllocHost.OpenAsync();
        long x = await AllocAsync(h, 10);
        var ex = await Assert.ThrowsAsync<TxUsageException>(() => h.InTx(new TxCredit(A.Regions - 1, A.Bytes), (tx, a) => a.Alloc(tx, 10)));
        Assert.Contains("AllocCredit", ex.Message);
        var ex2 = await Assert.ThrowsAsync<TxUsageException>(() => h.InTx(new TxCredit(F.Regions, F.Bytes - 1), (tx, a) => { a.Free(tx, x); return 0; }));
        Assert.Contains("FreeCredit", ex2.Message);
        Assert.Equal(16, await h.Run((_, a) => a.UsedBytes));
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Alloc_free_and_usable_size_do_not_allocate_managed_memory()
    {
        await using var h = await AllocHost.OpenAsync();
        const int n = 200;
        var offs = new long[n];
        long[] measured = new long[2];
        await h.RunAsync(async (seg, a) =>
        {
            // Round 0 warms up the pooled transaction's buffers; round 1 is measured.
            for (int round = 0; round < 2; round++)
            {
                using var tx = await seg.BeginAsync((Allocator.AllocCredit + Allocator.FreeCredit) * n);
                long before = GC.GetAllocatedBytesForCurrentThread();
                long sum = 0;
                for (int i = 0; i < n; i++)
                {
                    if (a.TryAlloc(tx, 16 + (i * 97) % 3000, 8 << (i % 10), out offs[i]) != AllocStatus.Ok) throw new InvalidOperationException("alloc failed");
                    sum += a.UsableSize(offs[i]);
                }
                for (int i = 0; i < n; i += 2) a.Free(tx, offs[i]);
                for (int i = 1; i < n; i += 2) a.Free(tx, offs[i]);
                measured[round] = GC.GetAllocatedBytesForCurrentThread() - before;
                Assert.True(sum > 0);
                _ = tx.Close();
            }
        });
        Assert.Equal(0, measured[1]);
        var s = await h.Run((_, a) => a.GetStats());
        Assert.Equal(0, s.UsedChunks);
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Allocations_survive_reopen_and_the_state_verifies()
    {
        await using var h = await AllocHost.OpenAsync();
        var offs = new List<long>();
        for (int i = 0; i < 50; i++)
        {
            int size = 10 + i * 37;
            offs.Add(await h.InTx(A + TxCredit.Region(size), (tx, a) =>
            {
                long o = a.Alloc(tx, size, i % 2 == 0 ? 8 : 256);
                tx.Capture(o, size).Fill((byte)i);
                return o;
            }));
        }
        for (int i = 0; i < 50; i += 4) await FreeAsync(h, offs[i]);
        var before = await h.Run((_, a) => a.GetStats());
        await h.ReopenAsync();
        var after = await h.Run((_, a) => a.GetStats());
        Assert.Equal(before.ToString(), after.ToString());
        Assert.Equal(before.HeapTop, after.HeapTop);
        await h.Run((seg, a) =>
        {
            a.LoadAndVerify();
            for (int i = 1; i < 50; i++)
            {
                if (i % 4 == 0) continue;
                int size = 10 + i * 37;
                Assert.True(a.UsableSize(offs[i]) >= size);
                Assert.True(seg.Bytes(offs[i], size).IndexOfAnyExcept((byte)i) < 0, $"block {i} lost its bytes");
            }
        });
        await AssertHealthy(h);
    }

    [Fact]
    public async Task Check_reports_damage_with_offsets()
    {
        await using var h = await AllocHost.OpenAsync();
        long a = await AllocAsync(h, 100);
        long b = await AllocAsync(h, 100);
        long c = await AllocAsync(h, 100);
        await AllocAsync(h, 100);
        await FreeAsync(h, b);
        await AssertHealthy(h);

        // Flip a size byte of a's header (outside any tx: this is the damage).
        var problems = await h.Run((seg, al) =>
        {
            seg.Bytes(a - Hdr + 8, 1)[0] ^= 0x10;
            var p = al.Check();
            seg.Bytes(a - Hdr + 8, 1)[0] ^= 0x10;
            return p;
        });
        Assert.Contains(problems, p => p.Contains($"chunk 0x{a - Hdr:X}") && p.Contains("CRC"));

        // A lost free chunk: clear its list head and bitmap bit.
        problems = await h.Run((seg, al) =>
        {
            int bin = AllocFormat.BinOf(112 + Hdr);
            ref long head = ref seg.At<long>(SegmentHeader.AllocatorOffset + 104 + 8 * bin);
            long saved = head;
            head = 0;
            var p = al.Check();
            head = saved;
            return p;
        });
        Assert.Contains(problems, p => p.Contains("bitmap"));
        Assert.Contains(problems, p => p.Contains($"free chunk 0x{b - Hdr:X} is on no free list"));

        // A wrong counter.
        problems = await h.Run((seg, al) =>
        {
            ref long used = ref seg.At<long>(SegmentHeader.AllocatorOffset + 40);
            used += 16;
            var p = al.Check();
            used -= 16;
            return p;
        });
        Assert.Contains(problems, p => p.Contains("used bytes"));

        // A broken boundary tag (header re-sealed so only the link is wrong).
        problems = await h.Run((seg, al) =>
        {
            var header = seg.Bytes(c - Hdr, Hdr);
            var saved = header.ToArray();
            MemoryMarshal.Write(header[16..], 4096L);
            uint crc = ~System.Numerics.BitOperations.Crc32C(Crc32C.Append(~0u, header[..28]), (ulong)(c - Hdr));
            MemoryMarshal.Write(header[28..], crc);
            var p = al.Check();
            saved.CopyTo(header);
            return p;
        });
        Assert.Contains(problems, p => p.Contains($"chunk 0x{c - Hdr:X}: previous-chunk link is 0x1000"));
        await AssertHealthy(h);
    }

    [Fact]
    public async Task A_damaged_state_block_is_refused_at_first_use()
    {
        await using var h = await AllocHost.OpenAsync();
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => h.Loc.RunAsync(() =>
        {
            var seg = h.Loc.Segment!;
            ref uint version = ref seg.At<uint>(SegmentHeader.AllocatorOffset + 4);
            version = 99;
            try { seg.Allocator.LoadAndVerify(); }
            finally { version = AllocFormat.StateVersion; }
        }));
        Assert.Contains("version 99", ex.Message);
        Assert.Equal(SegmentHeader.AllocatorOffset, ex.Offset);
        await AssertHealthy(h);
    }
}
