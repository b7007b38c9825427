// A .NET client for `chat-server --wire dotnet`, written for this project's
// interoperability test (tests/dotnet_interop.rs). It speaks the wire the way
// the original C# design's programs did: BinaryWriter.Write(string) and
// BinaryReader.ReadString() over a NetworkStream, so every message on the
// wire is framed by .NET itself, not by anything in this repository.
//
//   mono InteropClient.exe HOST PORTAL_PORT first|second
//   mono InteropClient.exe echo
//
// In echo mode it reads strings from stdin with ReadString() and writes each
// back to stdout with Write(string) until end of input, so a test can check
// the Rust codec against .NET's framing without a server.
//
// Two instances, one of each role, join through the portal, exchange a fixed
// script of messages and check that each receives exactly what the other
// sent, in order. Then "first" sends a message posing as the server, is
// refused, and leaves with CLIENT>>> TERMINATE; "second" reads that its
// partner left and leaves too. Exit code 0 means every step went as
// expected; otherwise the first thing that went wrong is on stderr.

using System;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;

class InteropFailure : Exception
{
    public InteropFailure(string message) : base(message) { }
}

static class InteropClient
{
    // No single read may wait longer than this; a missing message fails the
    // run instead of hanging it.
    const int ReadTimeoutMs = 10000;
    // The portal answers "full" while no worker port is free: ask again
    // after this delay, for at most this long.
    const int FullRetryMs = 200;
    const int FullGiveUpMs = 10000;

    static string role = "?";

    static int Main(string[] args)
    {
        if (args.Length == 1 && args[0] == "echo")
            return Echo();
        if (args.Length != 3 || (args[2] != "first" && args[2] != "second"))
        {
            Console.Error.WriteLine("usage: InteropClient.exe HOST PORTAL_PORT first|second, or InteropClient.exe echo");
            return 2;
        }
        role = args[2];
        try
        {
            Run(args[0], int.Parse(args[1]), role == "first");
            Console.WriteLine(role + ": all checks passed");
            return 0;
        }
        catch (InteropFailure e)
        {
            Console.Error.WriteLine(role + ": FAILED: " + e.Message);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(role + ": FAILED with " + e.GetType().Name + ": " + e.Message);
        }
        return 1;
    }

    static int Echo()
    {
        role = "echo";
        int count = 0;
        using (BinaryReader input = new BinaryReader(Console.OpenStandardInput()))
        using (BinaryWriter output = new BinaryWriter(Console.OpenStandardOutput()))
        {
            while (true)
            {
                string message;
                try
                {
                    message = input.ReadString();
                }
                catch (EndOfStreamException)
                {
                    break;
                }
                output.Write(message);
                count++;
            }
            output.Flush();
        }
        Console.Error.WriteLine("echo: " + count + " messages");
        return 0;
    }

    static void Run(string host, int portalPort, bool first)
    {
        string code;
        int port = AskPortal(host, portalPort, out code);
        Log("assigned port " + port);

        using (TcpClient client = Connect(host, port))
        using (NetworkStream stream = client.GetStream())
        using (BinaryReader reader = new BinaryReader(stream))
        using (BinaryWriter writer = new BinaryWriter(stream))
        {
            Send(writer, "CLIENT" + port + ">>>HandshakeCode=" + code);
            Expect(reader, "SERVER" + port + ">>> Connection successful");
            int partner = AwaitPartner(reader, port);
            Log("paired with " + partner);

            // Both sides send their whole script before reading the other's:
            // it is under 9 KB, well within what the sockets buffer.
            string[] mine = Script(first ? "first" : "second");
            string[] theirs = Script(first ? "second" : "first");
            foreach (string message in mine)
                Send(writer, message);
            for (int i = 0; i < theirs.Length; i++)
            {
                string got = Receive(reader);
                if (got != theirs[i])
                    throw new InteropFailure("message " + i + " from the partner differs: expected "
                        + Show(theirs[i]) + ", got " + Show(got));
            }
            Log("received the partner's " + theirs.Length + " messages intact");

            if (first)
            {
                // Only "first" does this, so "second" can check that the
                // message was not forwarded: its next message must be the
                // leave notice.
                Send(writer, "SERVER>>> Port=>1,HandshakeCode=forged");
                Expect(reader, "SERVER" + port + ">>> Refused: chat lines may not begin with SERVER");
                Log("refused a SERVER message, as it should be");
            }
            else
            {
                Expect(reader, "SERVER" + port + ">>> Partner " + partner + " left");
                Log("told that the partner left");
            }
            Leave(reader, writer, port);
        }
    }

    // The messages one role sends: ASCII, multi-byte UTF-8, embedded line
    // breaks, and texts of exactly 127, 128 and 8,000 bytes (the 7-bit length
    // prefix takes 1, 2 and 2 bytes for them).
    static string[] Script(string who)
    {
        string[] script = {
            "hello from " + who,
            "h\u00e9llo \u4f60\u597d \U0001F642 (" + who + ")",
            "two lines\nfrom " + who + "\r\nand a third",
            Filler(who, 127),
            Filler(who, 128),
            Filler(who, 8000),
        };
        return script;
    }

    // An ASCII text of exactly `bytes` bytes that says who sent it.
    static string Filler(string who, int bytes)
    {
        StringBuilder text = new StringBuilder(who + ":" + bytes + ":");
        for (int i = 0; text.Length < bytes; i++)
            text.Append((char)('a' + i % 26));
        string result = text.ToString();
        if (Encoding.UTF8.GetByteCount(result) != bytes)
            throw new InteropFailure("filler of " + bytes + " bytes came out wrong");
        return result;
    }

    // Asks the portal for a port and a passcode. The portal sends one
    // message and closes.
    static int AskPortal(string host, int portalPort, out string code)
    {
        DateTime giveUp = DateTime.UtcNow.AddMilliseconds(FullGiveUpMs);
        while (true)
        {
            string answer;
            using (TcpClient portal = Connect(host, portalPort))
            using (BinaryReader reader = new BinaryReader(portal.GetStream()))
                answer = Receive(reader);
            if (answer == "SERVER>>>full")
            {
                if (DateTime.UtcNow > giveUp)
                    throw new InteropFailure("the portal stayed full for " + FullGiveUpMs + " ms");
                Log("portal full; asking again");
                Thread.Sleep(FullRetryMs);
                continue;
            }
            const string head = "SERVER>>>Port=>";
            const string middle = ",HandshakeCode=";
            int at = answer.IndexOf(middle, StringComparison.Ordinal);
            int port;
            if (!answer.StartsWith(head, StringComparison.Ordinal) || at < 0
                || !int.TryParse(answer.Substring(head.Length, at - head.Length), out port))
                throw new InteropFailure("unexpected portal answer " + Show(answer));
            code = answer.Substring(at + middle.Length);
            return port;
        }
    }

    // After "Connection successful": either the partner is there already, or
    // a wait notice comes first and the partner's arrival later. Returns the
    // partner's port.
    static int AwaitPartner(BinaryReader reader, int port)
    {
        string prefix = "SERVER" + port + ">>> ";
        string notice = Receive(reader);
        string waiting = prefix + "Waiting for partner ";
        string connected = prefix + "Partner ";
        int partner;
        if (notice.StartsWith(waiting, StringComparison.Ordinal)
            && int.TryParse(notice.Substring(waiting.Length), out partner))
        {
            Log("waiting for " + partner);
            Expect(reader, connected + partner + " connected");
            return partner;
        }
        if (notice.StartsWith(connected, StringComparison.Ordinal) && notice.EndsWith(" connected", StringComparison.Ordinal)
            && int.TryParse(notice.Substring(connected.Length, notice.Length - connected.Length - " connected".Length), out partner))
            return partner;
        throw new InteropFailure("expected a wait or partner notice, got " + Show(notice));
    }

    // Sends the terminate command; the server may say goodbye, then closes.
    static void Leave(BinaryReader reader, BinaryWriter writer, int port)
    {
        Send(writer, "CLIENT>>> TERMINATE");
        string bye = "SERVER" + port + ">>> Bye";
        try
        {
            string got = reader.ReadString();
            if (got != bye)
                throw new InteropFailure("after TERMINATE expected the close or " + Show(bye) + ", got " + Show(got));
            got = reader.ReadString();
            throw new InteropFailure("after " + Show(bye) + " expected the close, got " + Show(got));
        }
        catch (EndOfStreamException)
        {
            Log("left; the server closed the connection");
        }
    }

    static TcpClient Connect(string host, int port)
    {
        TcpClient client = new TcpClient();
        client.ReceiveTimeout = ReadTimeoutMs;
        client.SendTimeout = ReadTimeoutMs;
        try
        {
            if (!client.ConnectAsync(host, port).Wait(ReadTimeoutMs))
                throw new InteropFailure("connecting to " + host + ":" + port + " timed out");
        }
        catch (AggregateException e)
        {
            throw new InteropFailure("cannot connect to " + host + ":" + port + ": " + e.InnerException.Message);
        }
        return client;
    }

    static void Send(BinaryWriter writer, string message)
    {
        writer.Write(message);
        writer.Flush();
    }

    // One message; the socket's receive timeout bounds the wait.
    static string Receive(BinaryReader reader)
    {
        try
        {
            return reader.ReadString();
        }
        catch (EndOfStreamException)
        {
            throw new InteropFailure("the server closed the connection while a message was expected");
        }
        catch (IOException e)
        {
            throw new InteropFailure("no message within " + ReadTimeoutMs + " ms or the read failed: " + e.Message);
        }
    }

    static void Expect(BinaryReader reader, string want)
    {
        string got = Receive(reader);
        if (got != want)
            throw new InteropFailure("expected " + Show(want) + ", got " + Show(got));
    }

    // A message for an error report: quoted, line breaks visible, long ones
    // cut.
    static string Show(string message)
    {
        string shown = message.Replace("\r", "\\r").Replace("\n", "\\n");
        if (shown.Length > 80)
            shown = shown.Substring(0, 80) + "... (" + Encoding.UTF8.GetByteCount(message) + " bytes)";
        return "\"" + shown + "\"";
    }

    static void Log(string what)
    {
        Console.WriteLine(role + ": " + what);
    }
}
