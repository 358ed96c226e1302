using System.Buffers.Binary;
using System.Numerics;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.CrashChild;

/// <summary>
/// The "counter" workload. Per locality (segment): a u64 counter at <see cref="CounterOffset"/> and a ring of
/// <see cref="RingSlots"/> slots at <see cref="RingOffset"/>. Each transaction increments the counter to v and writes
/// the record (v, locality, checksum) into slot v mod K, so the segment is "the state after tx v" exactly when the
/// counter is v and the last min(v, K) slots hold v-min(v,K)+1 .. v with valid checksums. Every transaction on the
/// segment is one of these, so the counter also equals the segment's last transaction id.
/// </summary>
public static class CounterWorkload
{
    /// <summary>Offset of the counter in each segment (the first data page).</summary>
    public const long CounterOffset = 4096;

    /// <summary>Offset of slot 0 of the ring.</summary>
    public const long RingOffset = CounterOffset + 512;

    /// <summary>Bytes of a slot: value (u64), locality (u32), checksum (u32), 8 bytes of the value's complement.
    /// 24 is not a divisor of 512, so some slots cross a sector boundary.</summary>
    public const int SlotSize = 24;

    /// <summary>Slots in the ring (K).</summary>
    public const int RingSlots = 100;

    /// <summary>Concurrent writers per locality.</summary>
    public const int WritersPerLocality = 16;

    /// <summary>Credit of one increment: the counter and one slot.</summary>
    public static TxCredit Credit => TxCredit.Of<long>() + TxCredit.Region(SlotSize);

    /// <summary>Offset of the slot holding value <paramref name="value"/>.</summary>
    public static long SlotOffset(long value) => RingOffset + (value % RingSlots) * SlotSize;

    /// <summary>The checksum stored in a slot.</summary>
    public static uint Checksum(long value, int locality) =>
        ~BitOperations.Crc32C(BitOperations.Crc32C(~0u, (ulong)value), (uint)locality);

    /// <summary>Encodes the slot record of <paramref name="value"/>.</summary>
    public static void WriteSlot(Span<byte> slot, long value, int locality)
    {
        BinaryPrimitives.WriteInt64LittleEndian(slot, value);
        BinaryPrimitives.WriteInt32LittleEndian(slot[8..], locality);
        BinaryPrimitives.WriteUInt32LittleEndian(slot[12..], Checksum(value, locality));
        BinaryPrimitives.WriteInt64LittleEndian(slot[16..], ~value);
    }

    /// <summary>Reads the counter of a segment (call on its owner, or with no owner running).</summary>
    public static long ReadCounter(Segment seg) => BinaryPrimitives.ReadInt64LittleEndian(seg.Bytes(CounterOffset, 8));

    /// <summary>
    /// Checks that <paramref name="seg"/> is exactly the state after transaction C of this workload, C being its
    /// counter: the ring holds the last min(C, K) values with valid checksums. Returns null if so, else what is wrong.
    /// </summary>
    public static string? Check(Segment seg, int locality)
    {
        long c = ReadCounter(seg);
        if (c < 0) return $"locality {locality}: counter is negative ({c})";
        for (long v = Math.Max(1, c - RingSlots + 1); v <= c; v++)
        {
            var slot = seg.Bytes(SlotOffset(v), SlotSize);
            long value = BinaryPrimitives.ReadInt64LittleEndian(slot);
            int loc = BinaryPrimitives.ReadInt32LittleEndian(slot[8..]);
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(slot[12..]);
            long complement = BinaryPrimitives.ReadInt64LittleEndian(slot[16..]);
            if (value != v || loc != locality || crc != Checksum(value, loc) || complement != ~value)
                return $"locality {locality}: counter {c}, but slot {v % RingSlots} (@0x{SlotOffset(v):X}) holds value {value}, " +
                    $"locality {loc}, checksum 0x{crc:X8} (valid 0x{Checksum(value, loc):X8}), complement {~complement}; expected value {v}";
        }
        return null;
    }

    /// <summary>
    /// Runs until the process is killed: <see cref="WritersPerLocality"/> writers per locality, each incrementing in a
    /// loop, printing <c>P &lt;locality&gt; &lt;value&gt;</c> once the transaction is persistent.
    /// </summary>
    public static Task RunAsync(Engine engine, int seed, TextWriter stdout, CancellationToken ct)
    {
        var tasks = new List<Task>();
        foreach (var loc in engine.Localities)
        {
            var seg = loc.Segment!;
            int index = loc.Index;
            for (int w = 0; w < WritersPerLocality; w++)
            {
                var rng = new Random(HashCode.Combine(seed, index, w));
                tasks.Add(loc.RunAsync(async () =>
                {
                    while (!ct.IsCancellationRequested)
                    {
                        using var tx = await seg.BeginAsync(Credit, ct);
                        // No await from here to Close: the increment is atomic on the locality (DESIGN invariant 1).
                        ref long counter = ref tx.Capture<long>(CounterOffset);
                        long v = counter + 1;
                        counter = v;
                        WriteSlot(tx.Capture(SlotOffset(v), SlotSize), v, index);
                        if (rng.Next(64) == 0) tx.Force();
                        var persisted = tx.Close();
                        await persisted;
                        stdout.WriteLine($"P {index} {v}");
                        if (rng.Next(8) == 0) await Task.Yield();
                    }
                }));
            }
        }
        return Task.WhenAll(tasks);
    }
}
