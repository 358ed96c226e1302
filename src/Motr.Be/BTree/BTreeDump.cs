using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Motr.Be.Segments;
using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeDumpFormat;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>
/// Save and load of a b+tree (r.btree.tools.save/load): <see cref="SaveAsync"/> writes a tree's records in
/// key order to a portable, versioned, checksummed file (<see cref="BTreeDumpFormat"/>, docs/btree-tools.md);
/// <see cref="LoadAsync(Stream, Segment, BTreeConfig?, IProgress{long}?, CancellationToken)"/> makes a new
/// tree from such a file. Both run on the segment's locality (the owner thread): they read and change the
/// segment between their awaits.
/// </summary>
public static class BTreeDump
{
    /// <summary>Records between two progress reports.</summary>
    public const int ProgressInterval = 10_000;

    /// <summary>Transactions of a load (or of the removal of a failed one) between two waits for durability.</summary>
    private const int DurableEvery = 8;

    private const string Bytewise = "bytewise";

    // ---- save ------------------------------------------------------------------------------------------

    /// <summary>
    /// Writes every record of <paramref name="tree"/>, in key order, to <paramref name="output"/> (from its
    /// current position); returns the number of records written. Run it on the tree's locality.
    /// </summary>
    /// <remarks>
    /// Not a snapshot: the records are read with a cursor between writes to the stream, and the tree may
    /// change while a write is awaited (records are copied out of the tree in the turn that reads them, so
    /// each record is saved whole as it was at that moment). After every await the cursor seeks from the root
    /// to the first key above the last one saved if the tree changed meanwhile (else it steps on from its place),
    /// so the file is always in strictly increasing key order and
    /// holds every record that was in the tree for the whole save, whatever changed meanwhile (through any
    /// object, or by an aborted transaction); a record inserted or deleted during the save may or may not be in
    /// it, and an update may be saved with its old or its new value. For a consistent copy, keep writers away
    /// for its duration. The header's record count is the count when the save began; the trailer's is what was
    /// written. A node or record checksum failure while reading the tree ends the save with that error.
    /// </remarks>
    /// <param name="tree">The tree to save.</param>
    /// <param name="output">A writable stream; it is flushed at the end, not closed.</param>
    /// <param name="progress">Receives the number of records written so far, every <see cref="ProgressInterval"/> records and at the end.</param>
    /// <param name="cancellationToken">Stops the save between records (the output then holds an incomplete file without a trailer).</param>
    /// <exception cref="ArgumentException">The stream is not writable, or the tree's comparer name does not fit the header.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread.</exception>
    /// <exception cref="BeCorruptionException">The tree is damaged (a node or record checksum failed while reading it), or its
    /// keys are out of order for its comparer (one that is not a total order, or damage): a key not above the one saved before
    /// it, which could otherwise send the save round the tree for ever.</exception>
    public static async Task<long> SaveAsync(BTree tree, Stream output, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tree);
        ArgumentNullException.ThrowIfNull(output);
        if (!output.CanWrite) throw new ArgumentException("the output stream is not writable", nameof(output));
        tree.Segment.CheckOwner("b+tree save");
        byte[] name = Encoding.UTF8.GetBytes(tree.ComparerName);
        if (name.Length is 0 or > MaxComparerName)
            throw new ArgumentException($"the tree's comparer name '{tree.ComparerName}' is {name.Length} UTF-8 bytes; a dump holds 1 to {MaxComparerName}", nameof(tree));

        byte[] buf = ArrayPool<byte>.Shared.Rent(BlockHeaderSize + TargetBlockBytes + (64 << 10));
        byte[] lastKey = ArrayPool<byte>.Shared.Rent(256);
        try
        {
            WriteFileHeader(buf, tree, name);
            await output.WriteAsync(buf.AsMemory(0, HeaderSize), cancellationToken);

            long total = 0, blocks = 0, nextReport = ProgressInterval;
            uint chain = ~0u;
            int payload = 0, count = 0;
            var cursor = tree.OpenCursor();
            bool more = cursor.SeekFirst();
            while (more)
            {
                cancellationToken.ThrowIfCancellationRequested();
                // Copied in this turn, so the record's bytes are the tree's as they are now.
                int rec = AppendRecord(ref buf, payload, cursor, out int keyLength);
                total++;
                bool overflow = payload > 0 && payload + rec > TargetBlockBytes;
                bool awaits = overflow || payload + rec >= TargetBlockBytes; // a block is written below
                long mods = tree.Modifications; // the tree as this record was read: unchanged after the await, the cursor steps on
                if (awaits)
                {
                    // The tree may change while a write is awaited: keep the last key saved, to seek past it after.
                    if (lastKey.Length < keyLength)
                    {
                        ArrayPool<byte>.Shared.Return(lastKey);
                        lastKey = ArrayPool<byte>.Shared.Rent(keyLength);
                    }
                    Buffer.BlockCopy(buf, BlockHeaderSize + payload + RecordPrefix, lastKey, 0, keyLength);
                }
                if (overflow)
                {
                    // The new record would overfill the block: write the block without it, then start the next with it.
                    chain = SealBlock(buf, payload, count, chain);
                    await output.WriteAsync(buf.AsMemory(0, BlockHeaderSize + payload), cancellationToken);
                    blocks++;
                    Buffer.BlockCopy(buf, BlockHeaderSize + payload, buf, BlockHeaderSize, rec);
                    payload = count = 0;
                }
                payload += rec;
                count++;
                if (payload >= TargetBlockBytes)
                {
                    chain = SealBlock(buf, payload, count, chain);
                    await output.WriteAsync(buf.AsMemory(0, BlockHeaderSize + payload), cancellationToken);
                    blocks++;
                    payload = count = 0;
                }
                if (total >= nextReport)
                {
                    progress?.Report(total);
                    nextReport += ProgressInterval;
                }
                if (awaits) more = NextAfterWrite(tree, cursor, lastKey.AsSpan(0, keyLength), mods);
                else if (more = cursor.MoveNext())
                {
                    // No await since the record was copied: its key is in the block, just written.
                    var prev = buf.AsSpan(BlockHeaderSize + payload - rec + RecordPrefix, keyLength);
                    if (tree.CompareKeys(cursor.Key, prev) <= 0) ThrowOutOfOrder(tree, cursor.Key, prev);
                }
            }
            if (count > 0)
            {
                chain = SealBlock(buf, payload, count, chain);
                await output.WriteAsync(buf.AsMemory(0, BlockHeaderSize + payload), cancellationToken);
                blocks++;
            }
            WriteTrailer(buf, total, blocks, ~chain);
            await output.WriteAsync(buf.AsMemory(0, TrailerSize), cancellationToken);
            await output.FlushAsync(cancellationToken);
            if (total != nextReport - ProgressInterval) progress?.Report(total);
            return total;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
            ArrayPool<byte>.Shared.Return(lastKey);
        }
    }

    /// <summary>
    /// After a block was written (an await), moves the cursor from the record whose key is <paramref name="last"/> to the
    /// next: by a step when the tree did not change meanwhile (<paramref name="mods"/> is still its count of changes and
    /// restores), else by a seek from the root to the first key above <paramref name="last"/> (the tree may have changed
    /// in any way, through any object or by an abort, so the cursor's path is not trusted).
    /// </summary>
    /// <remarks>
    /// A seek trusts the comparer: one that is not a total order (or damage) could send it back to a key already saved,
    /// and the save, which seeked past the last key of every block, went round the tree for ever. So the step, which
    /// goes strictly forward in the tree whatever the comparer says, is taken whenever it is safe; and the key a seek
    /// reaches must be above <paramref name="last"/> both ways round (a comparer that says each of two keys is above
    /// the other is caught too), and every key after the one before it (checked by the caller), else the save throws.
    /// </remarks>
    /// <exception cref="BeCorruptionException">The next key is not above the last one saved for the tree's comparer.</exception>
    private static bool NextAfterWrite(BTree tree, BTreeCursor cursor, ReadOnlySpan<byte> last, long mods)
    {
        if (tree.Modifications == mods)
        {
            if (!cursor.MoveNext()) return false;
            if (tree.CompareKeys(cursor.Key, last) <= 0) ThrowOutOfOrder(tree, cursor.Key, last);
            return true;
        }
        if (!cursor.Seek(last)) return false;
        if (tree.CompareKeys(cursor.Key, last) <= 0 && !cursor.MoveNext()) return false;
        if (tree.CompareKeys(cursor.Key, last) <= 0 || tree.CompareKeys(last, cursor.Key) >= 0) ThrowOutOfOrder(tree, cursor.Key, last);
        return true;
    }

    private static void ThrowOutOfOrder(BTree tree, ReadOnlySpan<byte> next, ReadOnlySpan<byte> last) =>
        throw new BeCorruptionException(tree.Segment.FileName, tree.Offset, $"{tree.Where}: save: the next key {Hex(next)} is not above " +
            $"the last key saved {Hex(last)} for the comparer '{tree.ComparerName}': the keys are out of order for it (a comparer " +
            "that is not a total order, or damage); Check names where");

    private static string Hex(ReadOnlySpan<byte> key) =>
        Convert.ToHexString(key[..Math.Min(key.Length, 32)]) + (key.Length > 32 ? $"..({key.Length} bytes)" : "");

    private static void WriteFileHeader(byte[] buf, BTree tree, byte[] comparerName)
    {
        var h = buf.AsSpan(0, HeaderSize);
        h.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(h[FileHeaderLayout.Magic..], FileMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(h[FileHeaderLayout.Version..], BTreeDumpFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(h[FileHeaderLayout.HeaderSize..], HeaderSize);
        h[FileHeaderLayout.LeafFormat] = (byte)tree.LeafFormat;
        h[FileHeaderLayout.TreeFlags] = tree.HasRecordChecksums ? RecordChecksumFlag : (byte)0;
        BinaryPrimitives.WriteUInt16LittleEndian(h[FileHeaderLayout.ComparerNameLen..], (ushort)comparerName.Length);
        BinaryPrimitives.WriteInt32LittleEndian(h[FileHeaderLayout.KeySize..], tree.KeySize ?? -1);
        BinaryPrimitives.WriteInt32LittleEndian(h[FileHeaderLayout.ValueSize..], tree.ValueSize ?? -1);
        BinaryPrimitives.WriteUInt32LittleEndian(h[FileHeaderLayout.LeafNodeSize..], (uint)tree.LeafNodeSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h[FileHeaderLayout.InternalNodeSize..], (uint)tree.InternalNodeSize);
        BinaryPrimitives.WriteInt64LittleEndian(h[FileHeaderLayout.RecordCountHint..], tree.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(h[FileHeaderLayout.SourceSegment..], tree.Segment.Id);
        BinaryPrimitives.WriteInt64LittleEndian(h[FileHeaderLayout.SourceTree..], tree.Offset);
        BinaryPrimitives.WriteInt64LittleEndian(h[FileHeaderLayout.CreatedUnixMs..], DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt32LittleEndian(h[FileHeaderLayout.TargetBlockBytes..], TargetBlockBytes);
        comparerName.CopyTo(h[FileHeaderLayout.ComparerName..]);
        BinaryPrimitives.WriteUInt32LittleEndian(h[FileHeaderLayout.Crc..], Crc32C.Compute(h[..FileHeaderLayout.Crc]));
    }

    /// <summary>Copies the cursor's record to the block being built, after <paramref name="payload"/> bytes; returns its size in the file.</summary>
    private static int AppendRecord(ref byte[] buf, int payload, BTreeCursor cursor, out int keyLength)
    {
        ReadOnlySpan<byte> key = cursor.Key;
        keyLength = key.Length;
        ReadOnlySpan<byte> value = cursor.Value;
        int rec = RecordPrefix + key.Length + value.Length;
        int at = BlockHeaderSize + payload;
        if (buf.Length - at < rec)
        {
            var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(at + rec, buf.Length * 2));
            Buffer.BlockCopy(buf, 0, bigger, 0, at);
            ArrayPool<byte>.Shared.Return(buf);
            buf = bigger;
        }
        var dst = buf.AsSpan(at, rec);
        BinaryPrimitives.WriteUInt32LittleEndian(dst, (uint)key.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[4..], (uint)value.Length);
        key.CopyTo(dst[RecordPrefix..]);
        value.CopyTo(dst[(RecordPrefix + key.Length)..]);
        return rec;
    }

    /// <summary>Fills in the block header in front of <paramref name="payload"/> bytes of records; returns the running CRC over block CRCs.</summary>
    private static uint SealBlock(byte[] buf, int payload, int count, uint chain)
    {
        var h = buf.AsSpan(0, BlockHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h[BlockHeaderLayout.Magic..], BlockMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(h[BlockHeaderLayout.PayloadLength..], (uint)payload);
        BinaryPrimitives.WriteUInt32LittleEndian(h[BlockHeaderLayout.RecordCount..], (uint)count);
        uint crc = BlockCrc(buf, payload);
        BinaryPrimitives.WriteUInt32LittleEndian(h[BlockHeaderLayout.Crc..], crc);
        return ChainCrc(chain, crc);
    }

    /// <summary>CRC32C of the block header's length and count fields followed by the payload.</summary>
    private static uint BlockCrc(byte[] buf, int payload) =>
        ~Crc32C.Append(Crc32C.Append(~0u, buf.AsSpan(BlockHeaderLayout.PayloadLength, 8)), buf.AsSpan(BlockHeaderSize, payload));

    private static uint ChainCrc(uint chain, uint blockCrc)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, blockCrc);
        return Crc32C.Append(chain, b);
    }

    private static void WriteTrailer(byte[] buf, long total, long blocks, uint blocksCrc)
    {
        var t = buf.AsSpan(0, TrailerSize);
        BinaryPrimitives.WriteUInt64LittleEndian(t[TrailerLayout.Magic..], TrailerMagic);
        BinaryPrimitives.WriteInt64LittleEndian(t[TrailerLayout.TotalRecords..], total);
        BinaryPrimitives.WriteInt64LittleEndian(t[TrailerLayout.BlockCount..], blocks);
        BinaryPrimitives.WriteUInt32LittleEndian(t[TrailerLayout.BlocksCrc..], blocksCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(t[TrailerLayout.Crc..], Crc32C.Compute(t[..TrailerLayout.Crc]));
    }

    // ---- load ------------------------------------------------------------------------------------------

    /// <summary>
    /// Creates a new tree in <paramref name="segment"/> and loads the records of the dump read from
    /// <paramref name="input"/> (from its current position) into it; returns the tree, durable, with every
    /// record of the file. Keep its <see cref="BTree.Offset"/> (e.g. as a named root) to open it again.
    /// Run it on the segment's locality. This is the overload with a root name, given none: see it for the
    /// validation, the batching and what happens on error.
    /// </summary>
    /// <param name="input">A readable stream positioned at the start of a dump.</param>
    /// <param name="segment">The segment to make the tree in (the caller runs on its owner).</param>
    /// <param name="config">The new tree's shape; null takes it from the dump's header.</param>
    /// <param name="progress">Receives the number of records loaded so far, every <see cref="ProgressInterval"/> records and at the end.</param>
    /// <param name="cancellationToken">Stops the load between transactions (the partial tree is then removed).</param>
    /// <exception cref="BeCorruptionException">The dump is damaged; <see cref="BeCorruptionException.Offset"/> says where.</exception>
    public static Task<BTree> LoadAsync(Stream input, Segment segment, BTreeConfig? config = null, IProgress<long>? progress = null,
        CancellationToken cancellationToken = default) =>
        LoadAsync(input, segment, config, rootName: null, progress, cancellationToken);

    /// <summary>
    /// Creates a new tree in <paramref name="segment"/>, stores its offset under <paramref name="rootName"/>
    /// (if given) in the same transaction, and loads the records of the dump read from <paramref name="input"/>
    /// into it; returns the tree, durable, with every record of the file. Run it on the segment's locality.
    /// </summary>
    /// <remarks>
    /// <para>Everything in the file is validated, and damage is a <see cref="BeCorruptionException"/> naming
    /// the file (a <see cref="FileStream"/>'s name, else "stream") and the byte offset in it: bad magic, an
    /// unsupported version or flags, a header, block or trailer checksum mismatch, a truncated file, a record
    /// running past its block, keys out of order (or repeated), a record that does not fit the tree, a trailer
    /// whose counts or block checksum chain disagree with the blocks, bytes after the trailer.</para>
    /// <para>Records are inserted in batches of transactions, each opened with its own credit: at most
    /// min(1 MiB, an eighth of the largest transaction the log takes) of bytes (and a 64th as many regions),
    /// or one record's <see cref="BTree.InsertCredit"/> if that is larger; records go into a transaction while
    /// its unused credit covers the next record's worst case. A block is read and validated whole before any
    /// of its records is inserted. The load waits for durability every few transactions and at the end.</para>
    /// <para>On any error (damage, cancellation, out of space, I/O) the new tree is removed again — its records
    /// deleted in batches, then the tree destroyed and the root name removed if it still names the tree — before the error is rethrown, so
    /// nothing leaks. Should that removal fail too (e.g. the log failed), the original error is thrown with the
    /// removal's exception in its <see cref="Exception.Data"/> under "Motr.BTreeDump.Cleanup", and the tree is
    /// left for the caller (findable under <paramref name="rootName"/> if one was given). A crash during a
    /// load leaves the partial tree: with a root name it can be found and deleted; without one it is
    /// unreachable, and <see cref="SegmentCheck"/> reports its chunks as leaked.</para>
    /// </remarks>
    /// <param name="input">A readable stream positioned at the start of a dump.</param>
    /// <param name="segment">The segment to make the tree in (the caller runs on its owner).</param>
    /// <param name="config">The new tree's shape; null takes it from the dump's header (which then must use the bytewise comparer).
    /// Its comparer must have the name recorded in the dump, and fixed key or value sizes must match the dump's.</param>
    /// <param name="rootName">A named root (<see cref="Segment.SetRoot"/>) to keep the new tree under from the moment it exists; it must not exist yet
    /// (checked again in the turn that creates the tree, so of two loads under one name at once, one is refused).</param>
    /// <param name="progress">Receives the number of records loaded so far, every <see cref="ProgressInterval"/> records and at the end.</param>
    /// <param name="cancellationToken">Stops the load between transactions (the partial tree is then removed).</param>
    /// <exception cref="BeCorruptionException">The dump is damaged; <see cref="BeCorruptionException.Offset"/> says where.</exception>
    /// <exception cref="ArgumentException">The configuration does not fit the dump, or the root name is taken.</exception>
    /// <exception cref="BeException">The segment ran out of space.</exception>
    /// <exception cref="TxUsageException">A single record needs more credit than one log record may hold (use a larger log).</exception>
    public static async Task<BTree> LoadAsync(Stream input, Segment segment, BTreeConfig? config, string? rootName, IProgress<long>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(segment);
        if (!input.CanRead) throw new ArgumentException("the input stream is not readable", nameof(input));
        segment.CheckOwner("b+tree load");
        ThrowIfRootTaken(segment, rootName);
        string file = input is FileStream fs ? fs.Name : "stream";

        byte[] buf = ArrayPool<byte>.Shared.Rent(BlockHeaderSize + TargetBlockBytes + (64 << 10));
        byte[] lastKey = ArrayPool<byte>.Shared.Rent(256);
        try
        {
            int got = await input.ReadAtLeastAsync(buf.AsMemory(0, HeaderSize), HeaderSize, throwOnEndOfStream: false, cancellationToken);
            var info = ParseHeader(buf, got, file);
            var cfg = ResolveConfig(info, config);

            BTree tree;
            TxPersistence last;
            using (var tx = await segment.BeginAsync(BTree.CreateCredit + (rootName != null ? Segment.RootCredit : default), cancellationToken))
            {
                // Checked again in the turn that takes the name: the awaits since the first check (the header's read,
                // the wait for credit) let other work, another load under the same name included, take it meanwhile,
                // and SetRoot would replace it (that tree then unreachable, or this one removed with its name later).
                ThrowIfRootTaken(segment, rootName);
                tree = BTree.Create(tx, segment, cfg);
                if (rootName != null) segment.SetRoot(tx, rootName, tree.Offset);
                last = tx.Close();
            }

            var run = new LoadRun(tree, segment, file, info, progress);
            try
            {
                long pos = HeaderSize;
                int lastKeyLength = -1;
                int txs = 0;
                while (true)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    got = await input.ReadAtLeastAsync(buf.AsMemory(0, BlockHeaderSize), BlockHeaderSize, throwOnEndOfStream: false, cancellationToken);
                    if (got < BlockHeaderSize)
                        throw Corrupt(file, pos + got, got == 0
                            ? $"truncated: the file ends at {pos} after {run.Blocks} blocks and {run.Records} records, without a trailer"
                            : $"truncated: the file ends at {pos + got}, inside the block header or trailer that starts at {pos}");
                    if (BinaryPrimitives.ReadUInt64LittleEndian(buf) == TrailerMagic)
                    {
                        got = await input.ReadAtLeastAsync(buf.AsMemory(BlockHeaderSize, TrailerSize - BlockHeaderSize), TrailerSize - BlockHeaderSize,
                            throwOnEndOfStream: false, cancellationToken);
                        if (got < TrailerSize - BlockHeaderSize)
                            throw Corrupt(file, pos + BlockHeaderSize + got, $"truncated: the file ends at {pos + BlockHeaderSize + got}, inside the trailer that starts at {pos}");
                        run.CheckTrailer(buf, pos);
                        got = await input.ReadAtLeastAsync(buf.AsMemory(0, 1), 1, throwOnEndOfStream: false, cancellationToken);
                        if (got != 0) throw Corrupt(file, pos + TrailerSize, "unexpected bytes after the trailer");
                        break;
                    }
                    int payload = run.CheckBlockHeader(buf, pos, out int count, out uint crc);
                    if (buf.Length < BlockHeaderSize + payload)
                    {
                        var bigger = ArrayPool<byte>.Shared.Rent(BlockHeaderSize + payload);
                        Buffer.BlockCopy(buf, 0, bigger, 0, BlockHeaderSize); // the CRC covers the header's length and count
                        ArrayPool<byte>.Shared.Return(buf);
                        buf = bigger;
                    }
                    got = await input.ReadAtLeastAsync(buf.AsMemory(BlockHeaderSize, payload), payload, throwOnEndOfStream: false, cancellationToken);
                    if (got < payload)
                        throw Corrupt(file, pos + BlockHeaderSize + got,
                            $"truncated: block {run.Blocks} at {pos} announces {payload} bytes of records; the file ends after {got} of them");
                    uint actual = BlockCrc(buf, payload);
                    if (actual != crc)
                        throw Corrupt(file, pos, $"block {run.Blocks} ({count} records from record {run.Records}, {payload} bytes): checksum mismatch (stored 0x{crc:X8}, computed 0x{actual:X8})");
                    lastKeyLength = run.CheckRecords(buf, payload, count, pos, ref lastKey, lastKeyLength);

                    // Insert the block's records, a batch of them per transaction.
                    int off = 0, i = 0;
                    while (i < count)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        var credit = TxCredit.Max(run.Budget, run.FirstCredit(buf, off));
                        using (var tx = await segment.BeginAsync(credit, cancellationToken))
                        {
                            if (run.InsertBatch(tx, buf, ref off, ref i, count, pos) == 0)
                                throw new InvalidOperationException($"{tree}: a transaction with credit {credit} took no record; the insert credit changed unexpectedly");
                            last = tx.Close();
                        }
                        if (++txs % DurableEvery == 0) await last; // yields the locality and bounds the undurable work
                    }
                    run.EndBlock(crc, count);
                    pos += BlockHeaderSize + payload;
                }
                await last;
                run.ReportEnd();
                return tree;
            }
            catch (Exception e)
            {
                try { await RemovePartialAsync(tree, segment, rootName, run.Budget); }
                catch (Exception cleanup) { e.Data["Motr.BTreeDump.Cleanup"] = cleanup; }
                throw;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
            ArrayPool<byte>.Shared.Return(lastKey);
        }
    }

    /// <summary>What the file header says.</summary>
    private readonly record struct DumpInfo(NodeFormat LeafFormat, bool RecordChecksums, int KeySize, int ValueSize, int LeafNodeSize,
        int InternalNodeSize, string ComparerName, long CountHint);

    private static DumpInfo ParseHeader(byte[] buf, int got, string file)
    {
        if (got < 8) throw Corrupt(file, got, $"truncated: the file is {got} bytes, shorter than the {HeaderSize}-byte dump header");
        var h = buf.AsSpan(0, HeaderSize);
        ulong magic = BinaryPrimitives.ReadUInt64LittleEndian(h);
        if (magic != FileMagic)
            throw Corrupt(file, FileHeaderLayout.Magic, $"not a b+tree dump: magic 0x{magic:X16}, expected 0x{FileMagic:X16} (\"MOTRBTSV\")");
        if (got < FileHeaderLayout.Version + 2) throw Corrupt(file, got, $"truncated: the file is {got} bytes, shorter than the {HeaderSize}-byte dump header");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(h[FileHeaderLayout.Version..]);
        if (version != BTreeDumpFormat.Version)
            throw Corrupt(file, FileHeaderLayout.Version, $"dump format version {version} is not supported; this build reads version {BTreeDumpFormat.Version}");
        if (got < HeaderSize) throw Corrupt(file, got, $"truncated: the file is {got} bytes, shorter than the {HeaderSize}-byte dump header");
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(h[FileHeaderLayout.Crc..]);
        uint computed = Crc32C.Compute(h[..FileHeaderLayout.Crc]);
        if (stored != computed)
            throw Corrupt(file, 0, $"dump header [0, {HeaderSize}): checksum mismatch (stored 0x{stored:X8}, computed 0x{computed:X8})");
        int hsize = BinaryPrimitives.ReadUInt16LittleEndian(h[FileHeaderLayout.HeaderSize..]);
        if (hsize != HeaderSize) throw Corrupt(file, FileHeaderLayout.HeaderSize, $"header size {hsize}, expected {HeaderSize}");
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(h[FileHeaderLayout.Flags..]);
        if (flags != 0) throw Corrupt(file, FileHeaderLayout.Flags, $"dump flags 0x{flags:X8} are not supported by this build");
        byte format = h[FileHeaderLayout.LeafFormat];
        byte treeFlags = h[FileHeaderLayout.TreeFlags];
        int keySize = BinaryPrimitives.ReadInt32LittleEndian(h[FileHeaderLayout.KeySize..]);
        int valueSize = BinaryPrimitives.ReadInt32LittleEndian(h[FileHeaderLayout.ValueSize..]);
        if (keySize < 0 && valueSize >= 0)
            throw Corrupt(file, FileHeaderLayout.ValueSize, $"value size {valueSize} with variable keys (key size {keySize}): there is no format for variable keys with fixed values");
        var expected = keySize < 0 ? NodeFormat.Variable : valueSize < 0 ? NodeFormat.FixedKey : NodeFormat.FixedKeyValue;
        if (format is < 1 or > 3 || (NodeFormat)format != expected)
            throw Corrupt(file, FileHeaderLayout.LeafFormat, $"leaf format {format} does not match key size {keySize} and value size {valueSize}");
        if ((treeFlags & ~RecordChecksumFlag) != 0) throw Corrupt(file, FileHeaderLayout.TreeFlags, $"tree flags 0x{treeFlags:X2} are not supported by this build");
        if (keySize is 0 or < -1 or > MaxKeyLength) throw Corrupt(file, FileHeaderLayout.KeySize, $"key size {keySize} is not -1 or 1 to {MaxKeyLength}");
        if (valueSize is < -1 or > MaxValueLength) throw Corrupt(file, FileHeaderLayout.ValueSize, $"value size {valueSize} is not -1 or 0 to {MaxValueLength}");
        uint leaf = BinaryPrimitives.ReadUInt32LittleEndian(h[FileHeaderLayout.LeafNodeSize..]);
        uint inner = BinaryPrimitives.ReadUInt32LittleEndian(h[FileHeaderLayout.InternalNodeSize..]);
        if (!ValidNodeSize(leaf)) throw Corrupt(file, FileHeaderLayout.LeafNodeSize, $"leaf node size {leaf} is not a power of two from {MinNodeSize} to {MaxNodeSize}");
        if (!ValidNodeSize(inner)) throw Corrupt(file, FileHeaderLayout.InternalNodeSize, $"internal node size {inner} is not a power of two from {MinNodeSize} to {MaxNodeSize}");
        if (BTree.FixedRecordsProblem((NodeFormat)format, keySize, valueSize, (treeFlags & RecordChecksumFlag) != 0, (int)leaf, (int)inner) is { } tooBig)
            throw Corrupt(file, FileHeaderLayout.KeySize, tooBig);
        int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(h[FileHeaderLayout.ComparerNameLen..]);
        if (nameLength is 0 or > MaxComparerName)
            throw Corrupt(file, FileHeaderLayout.ComparerNameLen, $"comparer name length {nameLength} is not 1 to {MaxComparerName}");
        string name;
        try { name = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(h.Slice(FileHeaderLayout.ComparerName, nameLength)); }
        catch (DecoderFallbackException) { throw Corrupt(file, FileHeaderLayout.ComparerName, "the comparer name is not valid UTF-8"); }
        long hint = BinaryPrimitives.ReadInt64LittleEndian(h[FileHeaderLayout.RecordCountHint..]);
        return new DumpInfo((NodeFormat)format, (treeFlags & RecordChecksumFlag) != 0, keySize, valueSize, (int)leaf, (int)inner, name, hint);
    }

    private static bool ValidNodeSize(uint size) => size >= MinNodeSize && size <= MaxNodeSize && (size & (size - 1)) == 0;

    private static BTreeConfig ResolveConfig(DumpInfo info, BTreeConfig? config)
    {
        if (config is null)
        {
            if (info.ComparerName != Bytewise)
                throw new ArgumentException($"the dump's keys are in '{info.ComparerName}' order: pass a BTreeConfig whose Comparer has that name", nameof(config));
            return new BTreeConfig
            {
                NodeSize = info.LeafNodeSize,
                InternalNodeSize = info.InternalNodeSize,
                KeySize = info.KeySize < 0 ? null : info.KeySize,
                ValueSize = info.ValueSize < 0 ? null : info.ValueSize,
                RecordChecksums = info.RecordChecksums,
            };
        }
        string want = config.Comparer?.Name ?? Bytewise;
        if (want != info.ComparerName)
            throw new ArgumentException($"the dump's keys are in '{info.ComparerName}' order, the configuration's comparer is '{want}'", nameof(config));
        if (config.KeySize is int k && info.KeySize >= 0 && k != info.KeySize)
            throw new ArgumentException($"the dump's keys are {info.KeySize} bytes, the configuration's {k}", nameof(config));
        if (config.ValueSize is int v && info.ValueSize >= 0 && v != info.ValueSize)
            throw new ArgumentException($"the dump's values are {info.ValueSize} bytes, the configuration's {v}", nameof(config));
        return config;
    }

    /// <summary>The state of one load: counters, limits, and the per-block work done synchronously (spans are not allowed across awaits).</summary>
    private sealed class LoadRun(BTree tree, Segment segment, string file, DumpInfo info, IProgress<long>? progress)
    {
        public readonly TxCredit Budget = BatchBudget(segment);
        public long Records;        // records in the blocks read so far (all inserted)
        public long Blocks;
        private uint _chain = ~0u;
        private long _nextReport = ProgressInterval;

        /// <summary>Validates a block header; returns the payload length.</summary>
        public int CheckBlockHeader(byte[] buf, long pos, out int count, out uint crc)
        {
            uint magic = BinaryPrimitives.ReadUInt32LittleEndian(buf);
            if (magic != BlockMagic)
                throw Corrupt(file, pos, $"expected block {Blocks} or the trailer: found magic 0x{magic:X8}");
            uint payload = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(BlockHeaderLayout.PayloadLength));
            uint n = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(BlockHeaderLayout.RecordCount));
            crc = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(BlockHeaderLayout.Crc));
            if (payload > MaxBlockBytes)
                throw Corrupt(file, pos + BlockHeaderLayout.PayloadLength, $"block {Blocks}: {payload} bytes of records is over the limit of {MaxBlockBytes}");
            if (n == 0 || (ulong)n * RecordPrefix > payload)
                throw Corrupt(file, pos + BlockHeaderLayout.RecordCount, $"block {Blocks}: {n} records cannot fill {payload} bytes");
            count = (int)n;
            return (int)payload;
        }

        /// <summary>
        /// Validates every record of a block (bounds, lengths against the dump and the tree, strictly increasing
        /// keys, also against the previous block's last key); keeps a copy of the last key; returns its length.
        /// </summary>
        public int CheckRecords(byte[] buf, int payload, int count, long pos, ref byte[] lastKey, int lastKeyLength)
        {
            ReadOnlySpan<byte> p = buf.AsSpan(BlockHeaderSize, payload);
            ReadOnlySpan<byte> prev = lastKeyLength >= 0 ? lastKey.AsSpan(0, lastKeyLength) : default;
            bool hasPrev = lastKeyLength >= 0;
            int off = 0;
            for (int r = 0; r < count; r++)
            {
                long at = pos + BlockHeaderSize + off;
                long index = Records + r;
                if (payload - off < RecordPrefix)
                    throw Corrupt(file, at, $"record {index} (block {Blocks}, record {r} of {count}): its length fields run past the end of the block");
                uint kl = BinaryPrimitives.ReadUInt32LittleEndian(p[off..]);
                uint vl = BinaryPrimitives.ReadUInt32LittleEndian(p[(off + 4)..]);
                if ((ulong)kl + vl > (ulong)(payload - off - RecordPrefix))
                    throw Corrupt(file, at, $"record {index}: a key of {kl} and a value of {vl} bytes run past the end of block {Blocks}");
                CheckLengths(kl, vl, at, index);
                var key = p.Slice(off + RecordPrefix, (int)kl);
                if (hasPrev)
                {
                    int c = tree.CompareKeys(prev, key);
                    if (c >= 0)
                        throw Corrupt(file, at, c == 0
                            ? $"record {index} repeats the key of the record before it"
                            : $"keys out of order: record {index} is below the record before it");
                }
                prev = key;
                hasPrev = true;
                off += RecordPrefix + (int)kl + (int)vl;
            }
            if (off != payload)
                throw Corrupt(file, pos + BlockHeaderSize + off, $"block {Blocks}: {payload - off} bytes after its {count} records");
            if (lastKey.Length < prev.Length)
            {
                ArrayPool<byte>.Shared.Return(lastKey);
                lastKey = ArrayPool<byte>.Shared.Rent(prev.Length);
            }
            prev.CopyTo(lastKey);
            return prev.Length;
        }

        private void CheckLengths(uint kl, uint vl, long at, long index)
        {
            if (info.KeySize >= 0 && kl != info.KeySize)
                throw Corrupt(file, at, $"record {index}: key of {kl} bytes; the dump's keys are {info.KeySize} bytes");
            if (info.ValueSize >= 0 && vl != info.ValueSize)
                throw Corrupt(file, at, $"record {index}: value of {vl} bytes; the dump's values are {info.ValueSize} bytes");
            if (kl == 0 || kl > MaxKeyLength)
                throw Corrupt(file, at, $"record {index}: key of {kl} bytes; keys are 1 to {MaxKeyLength} bytes");
            if (vl > MaxValueLength)
                throw Corrupt(file, at, $"record {index}: value of {vl} bytes; values are at most {MaxValueLength} bytes");
            if (tree.KeySize is int k && kl != k)
                throw Corrupt(file, at, $"record {index}: key of {kl} bytes does not fit the new tree, whose keys are {k} bytes");
            if (tree.ValueSize is int v && vl != v)
                throw Corrupt(file, at, $"record {index}: value of {vl} bytes does not fit the new tree, whose values are {v} bytes");
        }

        /// <summary>Insert credit of the record at <paramref name="off"/> in the block.</summary>
        public TxCredit FirstCredit(byte[] buf, int off)
        {
            var p = buf.AsSpan(BlockHeaderSize + off);
            return tree.InsertCredit((int)BinaryPrimitives.ReadUInt32LittleEndian(p), (int)BinaryPrimitives.ReadUInt32LittleEndian(p[4..]));
        }

        /// <summary>Inserts records from index <paramref name="i"/> while the transaction's unused credit covers the next one; returns how many.</summary>
        public int InsertBatch(Transaction tx, byte[] buf, ref int off, ref int i, int count, long pos)
        {
            int done = 0;
            while (i < count)
            {
                var rec = buf.AsSpan(BlockHeaderSize + off);
                int kl = (int)BinaryPrimitives.ReadUInt32LittleEndian(rec);
                int vl = (int)BinaryPrimitives.ReadUInt32LittleEndian(rec[4..]);
                var need = tree.InsertCredit(kl, vl);
                if (!tx.Fits(need)) break;
                var st = tree.Insert(tx, rec.Slice(RecordPrefix, kl), rec.Slice(RecordPrefix + kl, vl));
                if (st != BTreeStatus.Ok)
                {
                    long at = pos + BlockHeaderSize + off;
                    throw st == BTreeStatus.OutOfSpace
                        ? new BeException($"{file} @ 0x{at:X} ({at}): segment {segment.Id} ({segment.FileName}) is out of space after {Records + i} records of the dump")
                        : new BeException($"{file} @ 0x{at:X} ({at}): record {Records + i}: insert into the new tree returned {st}");
                }
                off += RecordPrefix + kl + vl;
                i++;
                done++;
                long loaded = Records + i;
                if (loaded >= _nextReport)
                {
                    progress?.Report(loaded);
                    _nextReport += ProgressInterval;
                }
            }
            return done;
        }

        /// <summary>The final report, unless the last periodic one already said it.</summary>
        public void ReportEnd()
        {
            if (Records != _nextReport - ProgressInterval) progress?.Report(Records);
        }

        public void EndBlock(uint crc, int count)
        {
            _chain = ChainCrc(_chain, crc);
            Records += count;
            Blocks++;
        }

        public void CheckTrailer(byte[] buf, long pos)
        {
            var t = buf.AsSpan(0, TrailerSize);
            uint stored = BinaryPrimitives.ReadUInt32LittleEndian(t[TrailerLayout.Crc..]);
            uint computed = Crc32C.Compute(t[..TrailerLayout.Crc]);
            if (stored != computed)
                throw Corrupt(file, pos, $"trailer: checksum mismatch (stored 0x{stored:X8}, computed 0x{computed:X8})");
            long total = BinaryPrimitives.ReadInt64LittleEndian(t[TrailerLayout.TotalRecords..]);
            if (total != Records)
                throw Corrupt(file, pos + TrailerLayout.TotalRecords, $"trailer says {total} records; the file holds {Records} (in {Blocks} blocks)");
            long blocks = BinaryPrimitives.ReadInt64LittleEndian(t[TrailerLayout.BlockCount..]);
            if (blocks != Blocks)
                throw Corrupt(file, pos + TrailerLayout.BlockCount, $"trailer says {blocks} blocks; the file holds {Blocks}");
            uint chain = BinaryPrimitives.ReadUInt32LittleEndian(t[TrailerLayout.BlocksCrc..]);
            if (chain != ~_chain)
                throw Corrupt(file, pos + TrailerLayout.BlocksCrc, $"trailer: the blocks' checksums do not add up (stored 0x{chain:X8}, computed 0x{~_chain:X8}): a block was replaced or moved");
        }
    }

    /// <summary>Credit of one load transaction: min(1 MiB, an eighth of the largest transaction the log takes), a 64th as many regions.</summary>
    private static TxCredit BatchBudget(Segment segment)
    {
        long bytes = Math.Clamp(segment.Domain.MaxTxReservation / 8, 64 << 10, 1 << 20);
        return new TxCredit((int)(bytes / 64), bytes);
    }

    // Checked before the load reads anything, and again in the turn that takes the name (see LoadAsync).
    private static void ThrowIfRootTaken(Segment segment, string? rootName)
    {
        if (rootName != null && segment.TryGetRoot(rootName, out long existing))
            throw new ArgumentException($"segment {segment.Id}: root '{rootName}' already names 0x{existing:X}; load under a new name", nameof(rootName));
    }

    /// <summary>Deletes every record of a tree that failed to load, in batches, then destroys it and removes its root name.</summary>
    private static async Task RemovePartialAsync(BTree tree, Segment segment, string? rootName, TxCredit budget)
    {
        var cursor = tree.OpenCursor();
        byte[] key = ArrayPool<byte>.Shared.Rent(256);
        try
        {
            TxPersistence last = default;
            int txs = 0;
            while (tree.Count > 0)
            {
                var credit = TxCredit.Max(budget, tree.DeleteCredit());
                using (var tx = await segment.BeginAsync(credit))
                {
                    if (DeleteBatch(tree, tx, cursor, ref key) == 0)
                        throw new InvalidOperationException($"{tree}: a transaction with credit {credit} deleted no record; the delete credit changed unexpectedly");
                    last = tx.Close();
                }
                if (++txs % DurableEvery == 0) await last;
            }
            using (var tx = await segment.BeginAsync(BTree.DestroyCredit + Segment.RootCredit))
            {
                tree.Destroy(tx);
                // Only if the name still names this tree: the caller may have given it to another meanwhile.
                if (rootName != null && segment.TryGetRoot(rootName, out long named) && named == tree.Offset) segment.RemoveRoot(tx, rootName);
                last = tx.Close();
            }
            await last;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(key);
        }
    }

    private static int DeleteBatch(BTree tree, Transaction tx, BTreeCursor cursor, ref byte[] key)
    {
        int done = 0;
        while (tree.Count > 0)
        {
            var need = tree.DeleteCredit();
            if (!tx.Fits(need)) break;
            if (!cursor.SeekFirst()) break;
            var k = cursor.Key;
            if (key.Length < k.Length)
            {
                ArrayPool<byte>.Shared.Return(key);
                key = ArrayPool<byte>.Shared.Rent(k.Length);
            }
            k.CopyTo(key);
            var st = tree.Delete(tx, key.AsSpan(0, k.Length));
            if (st != BTreeStatus.Ok) throw new BeException($"{tree}: removing a partly loaded tree: delete of its first key returned {st}");
            done++;
        }
        return done;
    }

    private static BeCorruptionException Corrupt(string file, long offset, string what) => new(file, offset, $"b+tree dump: {what}");
}
