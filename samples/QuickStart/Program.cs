using Motr.Be;
using Motr.Be.Tx;
using Motr.Runtime;

// QuickStart: open a domain in a local folder, run transactions on every locality, close,
// reopen (recovery runs) and print what was found.
string dir = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "motr-quickstart");
const int TxsPerLocality = 10_000;
const long CounterOffset = 8192;  // a 64-byte record per locality, at a fixed offset of its segment

var options = new DomainOptions { Path = dir, Segments = 2, SegmentSize = 1 << 20, LogSize = 16 << 20, OnWarning = Console.WriteLine };
Console.WriteLine($"domain folder: {dir}");

try
{
    await using (var engine = await Engine.OpenAsync(options))
    {
        Console.WriteLine($"open: {engine.Domain.Recovery}");
        var work = engine.Localities.Select(loc => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            TxPersistence last = default;
            for (int i = 0; i < TxsPerLocality; i++)
            {
                using var tx = await seg.BeginAsync(TxCredit.Region(64));
                var rec = tx.Capture(CounterOffset, 64);
                long n = BitConverter.ToInt64(rec) + 1;
                BitConverter.TryWriteBytes(rec, n);
                last = tx.Close();
            }
            await last;   // one await for the last: group commit makes the earlier ones durable too
            Console.WriteLine($"locality {loc.Index}: counter = {BitConverter.ToInt64(seg.Bytes(CounterOffset, 8))}, last tx id {seg.LastTxId}");
        })).ToArray();
        await Task.WhenAll(work);
        var st = engine.Domain.Stats;
        Console.WriteLine($"log: {st.Log.Records} records, {st.Log.Bytes} bytes, {st.Log.Syncs} fdatasyncs");
    }

    await using (var engine = await Engine.OpenAsync(options))
    {
        Console.WriteLine($"reopen: {engine.Domain.Recovery}");
        foreach (var loc in engine.Localities)
        {
            long counter = await loc.RunAsync(() => BitConverter.ToInt64(loc.Segment!.Bytes(CounterOffset, 8)));
            Console.WriteLine($"locality {loc.Index}: counter after reopen = {counter}, last tx id {loc.Segment!.LastTxId}");
        }
    }
}
catch (BeException e)
{
    // A damaged or foreign domain folder is reported, not thrown at the user as a stack trace.
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine($"the domain in {dir} cannot be opened; give another folder as the first argument, or remove this one to start afresh");
    return 1;
}
return 0;
