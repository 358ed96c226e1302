using System.Runtime.CompilerServices;
using Motr.Be.Alloc;
using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

public sealed unsafe partial class BTree
{
    /// <summary>How a record will be laid out: which parts stay in node, and its in-node size.</summary>
    private struct RecordSpec
    {
        public NodeFormat Format;
        public int KeyLength, ValueLength;
        public bool KeyLarge, ValueLarge;
        public int Size;
        public readonly int KeyPart => KeyLarge ? LargeRef.SizeOf : KeyLength;
        public readonly int ValuePart => ValueLarge ? LargeRef.SizeOf : ValueLength;
    }

    /// <summary>A leaf record: in node when it fits the inline limit; else the value, then the key too, out of node.</summary>
    private RecordSpec LeafSpec(int keyLength, int valueLength)
    {
        var f = _leafFormat;
        var s = new RecordSpec { Format = f, KeyLength = keyLength, ValueLength = valueLength };
        s.Size = Node.RecordSize(f, keyLength, valueLength, _recordCrc);
        if (s.Size <= _inline || f == NodeFormat.FixedKeyValue) return s;
        s.ValueLarge = true;
        s.Size = Node.RecordSize(f, keyLength, LargeRef.SizeOf, _recordCrc);
        if (s.Size <= _inline || f == NodeFormat.FixedKey) return s;
        s.KeyLarge = true;
        s.ValueLarge = Node.RecordSize(f, LargeRef.SizeOf, valueLength, _recordCrc) > _inline;
        s.Size = Node.RecordSize(f, LargeRef.SizeOf, s.ValuePart, _recordCrc);
        return s;
    }

    /// <summary>An internal record: a separator key and an 8-byte child.</summary>
    private RecordSpec InternalSpec(int keyLength)
    {
        var f = _internalFormat;
        var s = new RecordSpec { Format = f, KeyLength = keyLength, ValueLength = 8 };
        s.Size = Node.RecordSize(f, keyLength, 8, _recordCrc);
        if (s.Size > _inline && f == NodeFormat.Variable)
        {
            s.KeyLarge = true;
            s.Size = Node.RecordSize(f, LargeRef.SizeOf, 8, _recordCrc);
        }
        return s;
    }

    /// <summary>
    /// Inserts a record for <paramref name="key"/> at index <paramref name="i"/> of touched node
    /// <paramref name="n"/> if it has room; <paramref name="value"/> is where the value bytes go.
    /// <paramref name="tag"/> false: leave the entry untagged (the caller retags the whole node next).
    /// </summary>
    private bool TryInsert(Transaction tx, Node n, int i, ReadOnlySpan<byte> key, RecordSpec s, out Span<byte> value, out int recOffset, bool tag = true)
    {
        recOffset = n.Allocate(tx, s.Size, _scratch);
        if (recOffset < 0)
        {
            value = default;
            return false;
        }
        value = WriteRecord(tx, n, recOffset, key, s);
        n.InsertIndex(tx, i, recOffset, tag ? TagForInsert(tx, n, i, key) : (ushort)0);
        if (tag && i == 0 && !n.IsLeaf && n.Count > 1 && Tagged) TagSecond(tx, n);
        return true;
    }

    /// <summary>Writes the record's lengths and key; returns the span its value goes into (in node or in a new chunk).</summary>
    private Span<byte> WriteRecord(Transaction tx, Node n, int offset, ReadOnlySpan<byte> key, RecordSpec s)
    {
        var rec = tx.Capture(n.Off + offset, s.Size);
        rec.Clear();
        int pos = Node.LengthFields(s.Format);
        if (s.Format == NodeFormat.FixedKey)
            *(uint*)(n.P + offset) = (uint)s.ValueLength | (s.ValueLarge ? LargeFlag : 0);
        else if (s.Format == NodeFormat.Variable)
        {
            *(uint*)(n.P + offset) = (uint)s.KeyLength | (s.KeyLarge ? LargeFlag : 0);
            *(uint*)(n.P + offset + 4) = (uint)s.ValueLength | (s.ValueLarge ? LargeFlag : 0);
        }
        if (s.KeyLarge)
        {
            long chunk = AllocLarge(tx, key.Length);
            key.CopyTo(tx.Capture(chunk, key.Length));
            ref LargeRef r = ref *(LargeRef*)(n.P + offset + pos);
            r.Chunk = chunk;
            r.Crc = Crc32C.Compute(key);
        }
        else
            key.CopyTo(rec[pos..]);
        pos += s.KeyPart;
        if (!s.ValueLarge) return rec.Slice(pos, s.ValueLength);
        long vchunk = AllocLarge(tx, s.ValueLength);
        ((LargeRef*)(n.P + offset + pos))->Chunk = vchunk;
        return s.ValueLength == 0 ? default : tx.Capture(vchunk, s.ValueLength);
    }

    /// <summary>After the value is written: the out-of-node value's CRC and the record CRC.</summary>
    private void FinishRecord(Node n, int offset, RecordSpec s)
    {
        byte* r = n.P + offset;
        int pos = Node.LengthFields(s.Format) + s.KeyPart;
        if (s.ValueLarge)
        {
            ref LargeRef v = ref *(LargeRef*)(r + pos);
            v.Crc = Crc32C.Compute(_seg.Bytes(v.Chunk, s.ValueLength));
        }
        if (_recordCrc)
        {
            int covered = pos + s.ValuePart;
            *(uint*)(r + covered) = Crc32C.Compute(new ReadOnlySpan<byte>(r, covered));
        }
    }

    private long AllocLarge(Transaction tx, int length)
    {
        var st = _seg.Allocator.TryAlloc(tx, Math.Max(length, 1), 8, out long chunk);
        if (st != AllocStatus.Ok) throw new NoSpace();
        ref TreeHeader h = ref TouchTree(tx);
        h.LargeChunks++;
        h.LargeBytes += length;
        return chunk;
    }

    /// <summary>Frees the out-of-node parts of record <paramref name="i"/> (before the record itself goes).</summary>
    private void FreeLargeParts(Transaction tx, Node n, int i)
    {
        n.Parts(i, out byte* k, out uint klenf, out byte* v, out uint vlenf);
        if ((klenf & LargeFlag) != 0) FreeLarge(tx, ((LargeRef*)k)->Chunk, (int)(klenf & ~LargeFlag));
        if ((vlenf & LargeFlag) != 0) FreeLarge(tx, ((LargeRef*)v)->Chunk, (int)(vlenf & ~LargeFlag));
    }

    private void FreeLarge(Transaction tx, long chunk, int length)
    {
        _seg.Allocator.Free(tx, chunk);
        ref TreeHeader h = ref TouchTree(tx);
        h.LargeChunks--;
        h.LargeBytes -= length;
    }

    /// <summary>
    /// Makes record 0 of touched internal node <paramref name="n"/> keyless: empty, or zeros where keys have a
    /// fixed size. Record 0 stands for everything below record 1, so its key would only be a copy of the
    /// separator above the node, and a copy goes stale when the node later takes over a freed sibling's range.
    /// </summary>
    private void EmptyFirstKey(Transaction tx, Node n)
    {
        n.Parts(0, out byte* k, out uint klenf, out _, out _);
        if (n.Format == NodeFormat.Variable && klenf == 0) return;
        if ((klenf & LargeFlag) != 0) FreeLarge(tx, ((LargeRef*)k)->Chunk, (int)(klenf & ~LargeFlag));
        long child = n.RecordChild(0);
        int oldSize = n.RecordSizeAt(0), off = n.RecOffset(0);
        // WriteRecord clears the record before it copies the (empty) key in: a fixed-size key is left zeros.
        var spec = InternalSpec(Math.Max(_keySize, 0));
        System.Runtime.InteropServices.MemoryMarshal.Write(WriteRecord(tx, n, off, default, spec), child);
        FinishRecord(n, off, spec);
        if (oldSize > spec.Size) n.Release(tx, off + spec.Size, oldSize - spec.Size);
    }

    /// <summary>Removes record <paramref name="i"/> of touched node <paramref name="n"/> (its out-of-node parts must be dealt with first).</summary>
    private static void RemoveRecord(Transaction tx, Node n, int i)
    {
        int off = n.RecOffset(i), size = n.RecordSizeAt(i);
        n.RemoveIndex(tx, i);
        n.Release(tx, off, size);
    }

    /// <summary>Checks the CRC of record <paramref name="i"/> when the tree keeps record checksums.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CheckRecord(Node n, int i)
    {
        byte* f = n.RecordCrcField(i, out int covered);
        if (*(uint*)f != Crc32C.Compute(new ReadOnlySpan<byte>(n.Rec(i), covered)))
            throw new BeCorruptionException(_seg.FileName, n.Off + n.RecOffset(i), $"{Where}: record {i} of node 0x{n.Off:X}: record checksum mismatch");
        n.Parts(i, out byte* k, out uint klenf, out byte* v, out uint vlenf);
        if ((klenf & LargeFlag) != 0) CheckLarge((LargeRef*)k, (int)(klenf & ~LargeFlag), "key");
        if ((vlenf & LargeFlag) != 0) CheckLarge((LargeRef*)v, (int)(vlenf & ~LargeFlag), "value");
    }

    private void CheckLarge(LargeRef* r, int length, string what)
    {
        if (r->Crc != Crc32C.Compute(_seg.Bytes(r->Chunk, length)))
            throw new BeCorruptionException(_seg.FileName, r->Chunk, $"{Where}: out-of-node {what} of {length} bytes at 0x{r->Chunk:X}: checksum mismatch");
    }

    /// <summary>Copies a key into the separator buffer (the key's own bytes may move or be freed).</summary>
    private ReadOnlySpan<byte> CopySeparator(ReadOnlySpan<byte> key)
    {
        if (_sepKey.Length < key.Length) _sepKey = new byte[Math.Max(key.Length, _sepKey.Length * 2)];
        key.CopyTo(_sepKey);
        return _sepKey.AsSpan(0, key.Length);
    }
}
