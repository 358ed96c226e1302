namespace Motr.Be;

/// <summary>Base of every error the engine raises for a condition of its data or its use.</summary>
public class BeException : Exception
{
    /// <summary>Creates the exception with a message that names what and where.</summary>
    public BeException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// A persistent structure failed validation: bad magic, unsupported version, checksum mismatch,
/// truncation, or a log record that is damaged while later records are intact.
/// <see cref="File"/> and <see cref="Offset"/> say where.
/// </summary>
public sealed class BeCorruptionException : BeException
{
    /// <summary>The storage file holding the damaged structure.</summary>
    public string File { get; }

    /// <summary>Byte offset of the damaged structure in <see cref="File"/>.</summary>
    public long Offset { get; }

    /// <summary>
    /// Whether opening with <see cref="RecoveryMode.TruncateAtCorruption"/> gets past this damage: a damaged log record
    /// followed by intact ones, which <see cref="RecoveryMode.Strict"/> refuses. False for damage no recovery mode opens
    /// (a log or segment header, a truncated file, a log wrapped over its checkpoint).
    /// </summary>
    public bool TruncationOpens { get; init; }

    /// <summary>Creates the exception; the message is prefixed with file and offset.</summary>
    public BeCorruptionException(string file, long offset, string what, Exception? inner = null)
        : base($"{file} @ 0x{offset:X} ({offset}): {what}", inner)
    {
        File = file;
        Offset = offset;
    }
}

/// <summary>A transaction captured outside its credit or outside its segment, or was misused.</summary>
public sealed class TxUsageException : BeException
{
    /// <summary>Creates the exception.</summary>
    public TxUsageException(string message) : base(message) { }
}

/// <summary>
/// The log could not be written or synced. Every transaction not yet reported persistent fails with
/// this error and the domain refuses new transactions; data reported persistent before is intact.
/// </summary>
public sealed class LogFailedException : BeException
{
    /// <summary>Creates the exception.</summary>
    public LogFailedException(string message, Exception? inner = null) : base(message, inner) { }
}
