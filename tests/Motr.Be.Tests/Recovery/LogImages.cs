using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Recovery;

/// <summary>Crash images and the records of their logs, for the tests that damage or craft logs.</summary>
internal static class LogImages
{
    private const long Off = Engines.DataStart;

    /// <summary>A domain whose log holds 10 records (one tx each, values 1..10) that are not yet checkpointed, as after a crash.</summary>
    public static async Task<SimStorage> CrashedWithTenRecords()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                for (int i = 1; i <= 10; i++)
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                    tx.Capture<long>(Off) = i;
                    await tx.Close(); // awaiting each: one record per tx
                }
            });
            storage = storage.Clone();
        }
        return storage;
    }

    public record struct Rec(long Offset, uint Length, ulong Lsn);

    public static List<Rec> Records(SimStorage s)
    {
        var log = s.ReadAll(BeConstants.LogFileName);
        var list = new List<Rec>();
        long off = LogFormat.AreaOffset;
        while (off + RecordHeader.SizeOf <= log.Length)
        {
            var h = MemoryMarshal.Read<RecordHeader>(log.AsSpan((int)off));
            if (h.Magic != BeConstants.LogRecordMagic) break;
            list.Add(new Rec(off, h.Length, h.Lsn));
            off += h.Length;
        }
        return list;
    }
}
