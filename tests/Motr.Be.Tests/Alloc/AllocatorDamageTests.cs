using System.Numerics;
using System.Runtime.InteropServices;
using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Alloc;

/// <summary>
/// Damage to the allocator's free lists, whose links carry no checksum of their own: one damaged link must make
/// an allocation or a free refuse with the chunk's offset before it writes anything, never hand out a block too
/// small or one in use, nor write list pointers into a live block.
/// </summary>
public sealed class AllocatorDamageTests
{
    private const int Hdr = AllocFormat.ChunkHeaderSize;
    private const long State = SegmentHeader.AllocatorOffset;

    /// <summary>
    /// The heap the cases damage: a1 s1 a2 s2 c s3 live s4 x y (data offsets), with a1 and a2 free on one
    /// exact-fit list (a1 first), c free alone on a smaller one, everything else in use and x/y to free later.
    /// </summary>
    private sealed record Heap(long A1, long A2, long C, long Live, long X)
    {
        public long A1Chunk => A1 - Hdr;
        public long A2Chunk => A2 - Hdr;
        public long CChunk => C - Hdr;
        public long XChunk => X - Hdr;
        /// <summary>A place inside the live block's data where a chunk header could be (granule aligned).</summary>
        public long Fake => Live + 32;
    }

    private static async Task<Heap> BuildAsync(AllocHost h)
    {
        var blocks = await h.InTx(Allocator.AllocCredit * 10, (tx, a) =>
        {
            long[] sizes = [100, 100, 100, 100, 40, 100, 200, 100, 300, 100];
            var offs = new long[sizes.Length];
            for (int i = 0; i < sizes.Length; i++) offs[i] = a.Alloc(tx, sizes[i]);
            return offs;
        });
        await h.InTx(Allocator.FreeCredit * 3, (tx, a) =>
        {
            a.Free(tx, blocks[2]);   // a2
            a.Free(tx, blocks[0]);   // a1: pushed in front of a2
            a.Free(tx, blocks[4]);   // c
            return 0;
        });
        var heap = new Heap(blocks[0], blocks[2], blocks[4], blocks[6], blocks[8]);
        await h.Run((seg, _) =>
        {
            seg.Bytes(heap.Live, 200).Fill(0x5A);
            Assert.Equal(heap.A1Chunk, Head(seg, BinOfData(100)));
            Assert.Equal(heap.A2Chunk, Links(seg, heap.A1Chunk).Next);
            Assert.Equal(heap.CChunk, Head(seg, BinOfData(40)));
        });
        Assert.Empty(await h.Run((_, a) => a.Check()));
        return heap;
    }

    private static int BinOfData(long size) => AllocFormat.BinOf(Hdr + Math.Max(16, (size + 15) & ~15L));

    private static ref long Head(Segment seg, int bin) => ref seg.At<long>(State + AllocatorState.HeadsOffset + 8L * bin);

    private static ref FreeNode Links(Segment seg, long chunk) => ref seg.At<FreeNode>(chunk + Hdr);

    /// <summary>Writes <paramref name="value"/> at <paramref name="offset"/> outside any transaction (the damage); returns what was there.</summary>
    private static Task<long> Poke(AllocHost h, long offset, long value) => h.Run((seg, _) =>
    {
        long old = seg.At<long>(offset);
        seg.At<long>(offset) = value;
        return old;
    });

    /// <summary>Writes a chunk header at <paramref name="chunk"/> that passes its own checks (magic, flags, size, CRC for that offset).</summary>
    private static void ForgeHeader(Segment seg, long chunk, long size, ushort flags)
    {
        var header = seg.Bytes(chunk, Hdr);
        header.Clear();
        MemoryMarshal.Write(header, AllocFormat.ChunkMagic);
        MemoryMarshal.Write(header[4..], flags);
        MemoryMarshal.Write(header[8..], size);
        uint crc = ~BitOperations.Crc32C(Crc32C.Append(~0u, header[..28]), (ulong)chunk);
        MemoryMarshal.Write(header[28..], crc);
    }

    /// <summary>Runs <paramref name="op"/> in a fresh transaction, expects it to refuse as corruption, and checks it captured and changed nothing.</summary>
    private static Task<BeCorruptionException> RefusedUnchanged(AllocHost h, TxCredit credit, Action<Transaction, Allocator> op) =>
        h.Loc.RunAsync<BeCorruptionException>(async () =>
        {
            var seg = h.Loc.Segment!;
            byte[] before = seg.Bytes(0, (int)seg.Size).ToArray();
            using var tx = await seg.BeginAsync(credit);
            var ex = Assert.Throws<BeCorruptionException>(() => op(tx, seg.Allocator));
            Assert.Equal(0, tx.Used.Regions);
            Assert.True(seg.Bytes(0, (int)seg.Size).SequenceEqual(before), "the refused operation changed the segment");
            tx.Abort();
            return ex;
        });

    /// <summary>After the damage is repaired, the heap is healthy and serves the blocks the damaged lists held.</summary>
    private static async Task AssertRepaired(AllocHost h, Heap heap)
    {
        Assert.Empty(await h.Run((_, a) => a.Check()));
        var got = await h.InTx(Allocator.AllocCredit * 3, (tx, a) => new[] { a.Alloc(tx, 100), a.Alloc(tx, 100), a.Alloc(tx, 40) });
        Assert.Equal(new[] { heap.A1, heap.A2, heap.C }, got);
        await h.Run((seg, a) =>
        {
            Assert.Equal(-1, seg.Bytes(heap.Live, 200).IndexOfAnyExcept((byte)0x5A));
            Assert.Empty(a.Check());
        });
    }

    [Fact]
    public async Task A_free_list_link_to_a_smaller_free_chunk_is_refused_before_it_is_followed()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        // a1's next names c, a free chunk of a smaller class. Before the back-link check the first Alloc(100)
        // took a1 and made c the class's head; the second handed out c: 48 usable bytes for a 100-byte request.
        long saved = await Poke(h, heap.A1Chunk + Hdr, heap.CChunk);
        var ex = await RefusedUnchanged(h, Allocator.AllocCredit, (tx, a) => a.Alloc(tx, 100));
        Assert.Equal(heap.A1Chunk, ex.Offset);
        Assert.Contains($"allocator chunk 0x{heap.A1Chunk:X}: free-list link to 0x{heap.CChunk:X} does not lead to a free chunk linking back to it", ex.Message);
        Assert.NotEmpty(await h.Run((_, a) => a.Check()));
        await Poke(h, heap.A1Chunk + Hdr, saved);
        await AssertRepaired(h, heap);
    }

    [Fact]
    public async Task A_list_head_naming_a_chunk_of_another_size_is_refused()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        long head = State + AllocatorState.HeadsOffset + 8L * BinOfData(100);
        long saved = await Poke(h, head, heap.CChunk);
        var ex = await RefusedUnchanged(h, Allocator.AllocCredit, (tx, a) => a.Alloc(tx, 100));
        Assert.Equal(heap.CChunk, ex.Offset);
        Assert.Contains($"free list {BinOfData(100)} holds 0x{heap.CChunk:X}, which is not a free chunk of that list", ex.Message);
        await Poke(h, head, saved);
        await AssertRepaired(h, heap);
    }

    [Fact]
    public async Task A_link_to_a_forged_free_header_inside_a_live_block_writes_nothing_into_it()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        // A header with a valid checksum for its place, a free flag, and links naming a1 back: all that a
        // damaged or crafted block's data could hold. The chunk after it does not link back to it, which no
        // data inside the live block can change without forging a second header.
        await h.Run((seg, _) =>
        {
            ForgeHeader(seg, heap.Fake, 48, AllocFormat.FlagFree);
            Links(seg, heap.Fake).Prev = heap.A1Chunk;
            Links(seg, heap.Fake).Next = 0;
        });
        long saved = await Poke(h, heap.A1Chunk + Hdr, heap.Fake);
        var ex = await RefusedUnchanged(h, Allocator.AllocCredit, (tx, a) => a.Alloc(tx, 100));
        Assert.Equal(heap.A1Chunk, ex.Offset);
        Assert.Contains($"free-list link to 0x{heap.Fake:X} does not lead to a free chunk", ex.Message);

        // The same forged chunk as the head of the list a freed block joins: the push would write the block's
        // offset into the forged links, inside the live block.
        int xBin = AllocFormat.BinOf(await h.Run((seg, _) => seg.At<long>(heap.XChunk + 8)));
        long xHead = State + AllocatorState.HeadsOffset + 8L * xBin;
        long xBitmap = State + AllocatorState.BitmapOffset + 8L * (xBin >> 6);
        long savedHead = await Poke(h, xHead, heap.Fake);
        long savedBits = await Poke(h, xBitmap, await h.Run((seg, _) => seg.At<long>(xBitmap)) | (1L << (xBin & 63)));
        await h.Run((seg, _) => Links(seg, heap.Fake).Prev = 0);
        ex = await RefusedUnchanged(h, Allocator.FreeCredit, (tx, a) => a.Free(tx, heap.X));
        Assert.Equal(heap.Fake, ex.Offset);
        Assert.Contains($"free list {xBin} holds 0x{heap.Fake:X}", ex.Message);

        await Poke(h, xHead, savedHead);
        await Poke(h, xBitmap, savedBits);
        await Poke(h, heap.A1Chunk + Hdr, saved);
        await h.Run((seg, _) => seg.Bytes(heap.Live, 200).Fill(0x5A));
        await AssertRepaired(h, heap);
    }

    [Fact]
    public async Task Coalescing_with_a_free_neighbour_whose_link_is_damaged_is_refused()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        long s1 = heap.A1 + 112 + Hdr;   // the block between a1 and a2, both free
        // a2 ends its list; its next now names c. Freeing s1 unlinks both neighbours; before the check the
        // unlink of a2 wrote a1 into c's back link, joining the two lists.
        long saved = await Poke(h, heap.A2Chunk + Hdr, heap.CChunk);
        var ex = await RefusedUnchanged(h, Allocator.FreeCredit, (tx, a) => a.Free(tx, s1));
        Assert.Equal(heap.A2Chunk, ex.Offset);
        Assert.Contains("does not lead to a free chunk linking back to it", ex.Message);

        // A back link naming a chunk that does not link forward to it is refused the same way.
        await Poke(h, heap.A2Chunk + Hdr, saved);
        long savedPrev = await Poke(h, heap.A1Chunk + Hdr + 8, heap.CChunk);
        ex = await RefusedUnchanged(h, Allocator.FreeCredit, (tx, a) => a.Free(tx, s1));
        Assert.Equal(heap.A1Chunk, ex.Offset);
        Assert.Contains($"free-list back link to 0x{heap.CChunk:X} does not lead to a free chunk linking to it", ex.Message);
        await Poke(h, heap.A1Chunk + Hdr + 8, savedPrev);

        // A first-of-list chunk (no back link) that its list's head does not name.
        long head = State + AllocatorState.HeadsOffset + 8L * BinOfData(100);
        long savedHead = await Poke(h, head, heap.A2Chunk);
        ex = await RefusedUnchanged(h, Allocator.FreeCredit, (tx, a) => a.Free(tx, s1));
        Assert.Equal(heap.A1Chunk, ex.Offset);
        Assert.Contains($"it has no predecessor on free list {BinOfData(100)}, but the list starts at 0x{heap.A2Chunk:X}", ex.Message);
        await Poke(h, head, savedHead);

        await AssertRepaired(h, heap);
        await h.InTx(Allocator.FreeCredit, (tx, a) => { a.Free(tx, s1); return 0; });
        Assert.Empty(await h.Run((_, a) => a.Check()));
    }

    [Fact]
    public async Task A_damaged_head_of_the_list_a_wilderness_gap_joins_is_refused_before_any_capture()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        // A page-aligned block larger than every free chunk is carved from the wilderness behind a leading gap,
        // which is pushed onto its list: the push writes the old head's back link.
        long top = await h.Run((_, a) => a.GetStats().HeapTop);
        long gap = ((top + Hdr + 4095) & ~4095L) - Hdr - top;
        if (gap != 0 && gap < AllocFormat.MinChunkSize) gap += 4096;
        Assert.True(gap > 0);
        int bin = AllocFormat.BinOf(gap);
        Assert.True(bin < AllocFormat.BinOf(Hdr + 8000), "the gap's list is not one the request searches");
        long head = State + AllocatorState.HeadsOffset + 8L * bin;
        long word = State + AllocatorState.BitmapOffset + 8L * (bin >> 6);
        long savedHead = await Poke(h, head, heap.Live - Hdr);   // the list now "starts" at a live block
        long savedWord = await Poke(h, word, await h.Run((seg, _) => seg.At<long>(word)) | (1L << (bin & 63)));
        var ex = await RefusedUnchanged(h, Allocator.AllocCredit, (tx, a) => a.Alloc(tx, 8000, 4096));
        Assert.Equal(heap.Live - Hdr, ex.Offset);
        Assert.Contains($"free list {bin} holds 0x{heap.Live - Hdr:X}", ex.Message);
        await Poke(h, word, savedWord);
        await Poke(h, head, savedHead);
        await AssertRepaired(h, heap);
    }

    [Fact]
    public async Task Bitmap_bits_past_the_last_free_list_are_reported_and_never_followed()
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        long word = State + AllocatorState.BitmapOffset + 8L * (AllocFormat.BitmapWords - 1);
        long saved = await Poke(h, word, await h.Run((seg, _) => seg.At<long>(word)) | (1L << 42));
        var problems = await h.Run((_, a) => a.Check());
        Assert.Contains(problems, p => p.Contains($"bitmap word {AllocFormat.BitmapWords - 1} has bits 0x0000040000000000 set past the {AllocFormat.BinCount} free lists"));
        // The spare bit would name list 170, whose "head" would be read from past the state block (the roots
        // area): put something there that is not a free chunk, which following the bit would refuse.
        long spare = State + AllocatorState.HeadsOffset + 8L * 170;
        long savedSpare = await Poke(h, spare, 0x1230);
        long big = await h.InTx(Allocator.AllocCredit, (tx, a) => a.Alloc(tx, 64 << 10));
        Assert.True(big > heap.X, "a block larger than every free chunk comes from the wilderness");
        await Poke(h, spare, savedSpare);
        await Poke(h, word, saved);
        await AssertRepaired(h, heap);
    }

    /// <summary>A heap top below the heap's start, or above the segment's size (two granules past it, inside the reservation).</summary>
    public static TheoryData<string, bool> HeapTopCases()
    {
        var data = new TheoryData<string, bool>();
        foreach (var op in new[] { "stats", "free", "usable-size", "walk", "alloc" })
        {
            data.Add(op, false);
            data.Add(op, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(HeapTopCases))]
    public async Task A_heap_top_outside_the_segment_is_refused_naming_it_before_anything_reads_past_it(string op, bool above)
    {
        await using var h = await AllocHost.OpenAsync();
        var heap = await BuildAsync(h);
        long field = State + AllocatorState.HeapTopOffset;
        long damaged = above ? AllocHost.SegmentSize + 2 * AllocFormat.Granule : AllocFormat.HeapStart - AllocFormat.Granule;
        // A stray write over the heap top in memory (the state's checksum is only looked at when a group seals). Before,
        // each call trusted it: a top past the segment let a wild offset or the walk read past committed memory (a process
        // fault), a top below the heap made stats and walks report an empty heap and a free refuse a live block as wild,
        // and an alloc from the wilderness carved a block over the segment's header.
        long saved = await Poke(h, field, damaged);
        var ex = await RefusedUnchanged(h, Allocator.AllocCredit, (tx, a) =>
        {
            switch (op)
            {
                case "stats": a.GetStats(); break;
                case "free": a.Free(tx, heap.X); break;
                case "usable-size": a.UsableSize(heap.X); break;
                case "walk": a.AllocatedBlocks().ToList(); break;
                case "alloc": a.Alloc(tx, 64 << 10); break; // larger than every free chunk: from the wilderness
            }
        });
        Assert.Equal(field, ex.Offset);
        Assert.Contains($"allocator state: heap top 0x{damaged:X} is outside the heap [0x{AllocFormat.HeapStart:X}, segment size 0x{AllocHost.SegmentSize:X}]", ex.Message);
        await Poke(h, field, saved);
        await AssertRepaired(h, heap);
    }
}
