using System.Diagnostics;
using System.Runtime.InteropServices;
using Motr.Be.Placing;
using Motr.Be.Tx;

namespace Motr.Be.Log;

/// <summary>
/// The log writer: one thread per domain. It takes the sealed groups of every locality, writes them
/// as one record, fdatasyncs, then completes each group's persistence on its own locality and hands
/// the record to the placer. Group commit is adaptive: the next record is written as soon as the
/// previous one is durable, with whatever groups arrived meanwhile; when it has nothing to do it asks
/// localities holding an open group to seal it.
/// </summary>
internal sealed class LogWriter
{
    private readonly Domain _domain;
    private readonly LogFile _log;
    private readonly Placer _placer;
    private readonly Thread _thread;
    private readonly Lock _lock = new();
    // Groups sealed while a record is written (a burst of closes seals one per 128 transactions): room for a few hundred
    // from the start, so the lists do not grow, each in turn, as bursts reach new peaks.
    private List<SealedGroup> _inbox = new(256);
    private List<SealedGroup> _batch = new(256);
    private readonly ManualResetEventSlim _signal = new(false, spinCount: 100);
    private int _idle;
    private volatile bool _stopping;
    private ulong _nextLsn;
    private long _position;

    // Counters (writer thread writes, anyone reads).
    private long _records, _recordBytes, _syncs, _groups;
    private long _syncTicks;

    public LogWriter(Domain domain, LogFile log, Placer placer, long position, ulong nextLsn)
    {
        _domain = domain;
        _log = log;
        _placer = placer;
        _position = position;
        _nextLsn = nextLsn;
        _thread = new Thread(Run) { Name = "motr-log-writer", IsBackground = true };
    }

    public void Start()
    {
        _domain.Options.LogWriterStarting?.Invoke(_domain);
        _thread.Start();
    }

    /// <summary>True while the writer waits for work: a locality that goes idle with an open group seals it at once.</summary>
    public bool IsIdle => Volatile.Read(ref _idle) == 1;

    public long Position => Volatile.Read(ref _position);

    public LogWriterStats Stats => new(Volatile.Read(ref _records), Volatile.Read(ref _recordBytes), Volatile.Read(ref _syncs),
        Volatile.Read(ref _groups), TimeSpan.FromTicks(Volatile.Read(ref _syncTicks) * TimeSpan.TicksPerSecond / Stopwatch.Frequency));

    /// <summary>Any owner thread: hand over a sealed group.</summary>
    public void Submit(SealedGroup g)
    {
        lock (_lock) _inbox.Add(g);
        if (Volatile.Read(ref _idle) == 1) _signal.Set();
    }

    /// <summary>Stops after writing everything submitted so far.</summary>
    public void Stop()
    {
        _stopping = true;
        _signal.Set();
        _thread.Join();
    }

    private void Run()
    {
        while (true)
        {
            if (!Take())
            {
                Interlocked.Exchange(ref _idle, 1);
                // Ask every locality with an open group to seal it; they answer through Submit.
                foreach (var s in _domain.Segments) s.Tx.RequestSeal();
                if (!Take())
                {
                    if (_stopping) return;
                    _signal.Wait();
                    _signal.Reset();
                    Interlocked.Exchange(ref _idle, 0);
                    continue;
                }
            }
            Interlocked.Exchange(ref _idle, 0);
            if (_domain.Failure is not null)
            {
                Discard();
                continue;
            }
            try
            {
                WriteBatch();
            }
            catch (Exception e)
            {
                // Nothing more is written: every transaction not yet reported persistent fails.
                _domain.Fail(new LogFailedException($"{_log.Where}: log write failed: {e.Message}", e));
                Discard();
            }
        }
    }

    private bool Take()
    {
        lock (_lock)
        {
            if (_inbox.Count == 0) return false;
            (_inbox, _batch) = (_batch, _inbox);
            return true;
        }
    }

    private void Discard()
    {
        foreach (var g in _batch)
            if (g.Buffer is not null) BufferPool.Return(g.Buffer);
        _batch.Clear();
    }

    private void WriteBatch()
    {
        int i = 0;
        while (i < _batch.Count)
        {
            // As many groups as fit one record; a single group is never larger than a record.
            int first = i;
            long body = 0;
            long reserved = 0;
            do
            {
                body += _batch[i].Length;
                reserved += _batch[i].Reserved;
                i++;
            } while (i < _batch.Count && RecordHeader.SizeOf + body + _batch[i].Length <= _domain.MaxRecordSize);
            WriteRecord(first, i, body, reserved);
        }
        _batch.Clear();
    }

    // The parts of the record being written: header, each group's chunk as its locality sealed it, padding.
    private readonly List<ReadOnlyMemory<byte>> _parts = new();
    private readonly byte[] _header = new byte[RecordHeader.SizeOf];
    private static readonly byte[] s_padding = new byte[BeConstants.SectorSize];

    private void WriteRecord(int first, int end, long body, long reserved)
    {
        int length = (int)LogFormat.AlignSector(RecordHeader.SizeOf + body);
        long position = _position;
        long skip = 0;
        if (_log.ToLapEnd(position) < length)
        {
            skip = _log.ToLapEnd(position);
            position += skip;
        }
        // The groups go to the file where they are (one pwritev), not copied into one buffer first; the
        // placer then reads them from the same buffers and returns them.
        var groups = new SealedGroup[end - first];
        uint crcs = ~0u;
        Span<byte> crcBytes = stackalloc byte[4];
        _parts.Clear();
        _parts.Add(_header);
        for (int g = first; g < end; g++)
        {
            var sg = _batch[g];
            groups[g - first] = sg;
            _parts.Add(sg.Buffer.AsMemory(0, sg.Length));
            MemoryMarshal.Write(crcBytes, sg.Crc);
            crcs = Crc32C.Append(crcs, crcBytes);
        }
        int padding = length - RecordHeader.SizeOf - (int)body;
        if (padding > 0) _parts.Add(s_padding.AsMemory(0, padding));
        ref RecordHeader h = ref MemoryMarshal.AsRef<RecordHeader>(_header.AsSpan());
        h = new RecordHeader
        {
            Magic = BeConstants.LogRecordMagic,
            Version = BeConstants.LogVersion,
            Lsn = _nextLsn,
            Position = position,
            Length = (uint)length,
            GroupCount = (uint)(end - first),
            BodyLength = (uint)body,
            GroupCrcs = ~crcs,
            DomainId = _log.DomainId,
        };
        h.HeaderCrc = LogRecord.HeaderCrc(_header);

        _log.WriteRecord(position, _parts);
        _parts.Clear();
        long t0 = Stopwatch.GetTimestamp();
        _log.Flush();
        _syncTicks += Stopwatch.GetTimestamp() - t0;

        ulong lsn = _nextLsn++;
        Volatile.Write(ref _position, position + length);
        _domain.LogSpace.RecordWritten(reserved, skip + length);
        _records++;
        _recordBytes += length;
        _syncs++;
        _groups += end - first;
        // Durable: the groups' buffers now belong to the placer (Discard must not return them too), which
        // gets the bytes before every group completes on its own locality — in this order, so a checkpoint
        // asked for by anyone who saw a transaction persist includes it.
        for (int g = first; g < end; g++) _batch[g] = default;
        _placer.Enqueue(new DurableRecord(groups, length, lsn, position));
        foreach (var sg in groups) sg.Manager.OnGroupDurable(sg.Seq);
    }
}

/// <summary>
/// A record that is durable in the log, waiting to be placed: as read back from the log (<see cref="Buffer"/>,
/// recovery) or as the log writer wrote it (<see cref="Groups"/>, each chunk in the buffer its locality sealed).
/// </summary>
internal readonly struct DurableRecord
{
    public readonly byte[]? Buffer;
    public readonly SealedGroup[]? Groups;
    public readonly int Length;
    public readonly ulong Lsn;
    public readonly long Position;

    /// <summary>A whole record in <paramref name="buffer"/> (header, group chunks, padding).</summary>
    public DurableRecord(byte[] buffer, int length, ulong lsn, long position)
    {
        Buffer = buffer;
        Length = length;
        Lsn = lsn;
        Position = position;
    }

    /// <summary>A record written from <paramref name="groups"/>.</summary>
    public DurableRecord(SealedGroup[] groups, int length, ulong lsn, long position)
    {
        Groups = groups;
        Length = length;
        Lsn = lsn;
        Position = position;
    }

    public long End => Position + Length;
}

/// <summary>Counters of the log writer.</summary>
/// <param name="Records">Records written.</param>
/// <param name="Bytes">Bytes written, headers and padding included.</param>
/// <param name="Syncs">fdatasync calls.</param>
/// <param name="Groups">Groups written.</param>
/// <param name="SyncTime">Total time spent in fdatasync.</param>
public readonly record struct LogWriterStats(long Records, long Bytes, long Syncs, long Groups, TimeSpan SyncTime);
