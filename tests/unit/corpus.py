"""Malformed and torture SIP messages, each with what the message layer must make of it.

The RFC 4475 messages (section numbers in the notes) are rebuilt here with CRLF line ends;
the rest are our own. The server-level tests share this list:
`from tests.unit.corpus import CORPUS`.

`expected` is the outcome at the message layer:

- "drop": nothing can be answered. `parse_message` raises ParseError (MessageTooLarge
  included, when not even the head of an oversized message parses). For a response it
  also covers `Response.validate()` raising: a response is never answered.
- an int: a request to be answered with that status. `parse_message` returns a Request
  and its `validate()` raises SipError with that status. 513 is the one exception:
  `parse_message` raises MessageTooLarge, and the request's head on its own parses, so
  the server answers 513 from it.
- "valid": it parses and validates. The application may still refuse it (501 for an
  unknown method, 420 for an unknown Require, ...); `note` says what a server answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Expected = str | int


@dataclass(frozen=True, slots=True)
class CorpusEntry:
    name: str
    data: bytes
    expected: Expected  # "drop", "valid" or the status that validate() raises
    note: str = ""


def _msg(head: str, body: bytes = b"") -> bytes:
    """A message written one line per line (LF in the source), sent with CRLF line ends."""
    return head.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def _sdp(o_ip: str, c_ip: str | None = None, t: str = "0 0") -> bytes:
    """The session description most RFC 4475 messages carry."""
    lines = [
        "v=0",
        f"o=mhandley 29739 7272939 IN IP4 {o_ip}",
        "s=-",
        f"c=IN IP4 {c_ip or o_ip}",
        f"t={t}",
        "m=audio 49217 RTP/AVP 0 12",
        "m=video 3227 RTP/AVP 31",
        "a=rtpmap:31 LPC",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


# ---- RFC 4475 3.1.1: valid messages a robust parser must accept ---------------------

_WSINV = _msg(
    r"""
INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
""",
    _sdp("192.0.2.3", "192.0.2.4"),
)

# The To display name holds quoted-pairs of BEL, NUL and DEL; the From parameter value and
# the extension header value are UTF-8.
_INTMETH = _msg(
    "!interesting-Method0123456789_*+`.%indeed'~ "
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
    "(doesn't-it)@example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
    'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
    "<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\n"
    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;"
    "fromParam''~+*_!.-%=\"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439\";"
    "tag=_token~1'+`*%!-.\n"
    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
    "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
    "Max-Forwards: 255\n"
    "extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb\n"
    "Content-Length: 0\n"
)

_ESC01 = _msg(
    """
INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150
""",
    _sdp("192.0.2.1"),
)

_ESCNULL = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0
"""
)

_ESC02 = _msg(
    """
RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0
"""
)

_LWSDISP = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0
"""
)

_LONG = "long" * 20
_LONGREQ = _msg(
    f"""
INVITE sip:user@example.com SIP/2.0
To: "I have a user name of {"extreme" * 10} proportion"<sip:user@example.com:6000;unknownparam1=very{_LONG}value;longparam{"name" * 25}=shortvalue;very{"long" * 25}ParameterNameWithNoValue>
F: sip:{"amazinglylongcallername" * 5}@example.net;tag={"1298298" * 20}2424;unknownheaderparam{"name" * 20}=unknowheaderparam{"value" * 15};unknownValuelessparam{"name" * 10}
Call-ID: longreq.one{"really" * 20}longcallid
CSeq: 3882340 INVITE
Unknown-{"Long" * 20}-Name: unknown-{_LONG}-value; unknown-{_LONG}-parameter-name = unknown-{_LONG}-parameter-value
Via: SIP/2.0/TCP sip33.example.com
v: SIP/2.0/TCP sip32.example.com
V: SIP/2.0/TCP sip31.example.com
Via: SIP/2.0/TCP sip30.example.com
ViA: SIP/2.0/TCP sip29.example.com
VIa: SIP/2.0/TCP sip28.example.com
VIA: SIP/2.0/TCP sip27.example.com
via: SIP/2.0/TCP sip26.example.com
viA: SIP/2.0/TCP sip25.example.com
vIa: SIP/2.0/TCP sip24.example.com
vIA: SIP/2.0/TCP sip23.example.com
V :  SIP/2.0/TCP sip22.example.com
v :  SIP/2.0/TCP sip21.example.com
V  : SIP/2.0/TCP sip20.example.com
v  : SIP/2.0/TCP sip19.example.com
Via : SIP/2.0/TCP sip18.example.com
Via  : SIP/2.0/TCP sip17.example.com
"""
    + "".join(f"Via: SIP/2.0/TCP sip{n}.example.com\n" for n in range(16, 0, -1))
    + f"""Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{"long" * 50}branchvalue
Max-Forwards: 70
Contact: <sip:{"amazinglylongcallername" * 5}@host5.example.net>
Content-Type: application/sdp
l: 150
""",
    _sdp("192.0.2.1"),
)

_DBLREQ = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0
""",
    _msg(
        """
INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150
""",
        _sdp("192.0.2.15").replace(b"m=video", b"m =video"),
    ),
)

_SEMIURI = _msg(
    """
OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0
"""
)

_TRANSPORTS = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"""
)

# Two body parts, the second binary with NULs and a CRLFCRLF in it: framing must go by
# Content-Length, not by looking for the end of the headers again.
_MPART_BODY = (
    b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n"
    b"\r\nHello\r\n--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n"
    + bytes(range(256))
    + b"\x00\x00\r\n\r\n\xff\xfe\x00"
    + b"\r\n--7a9cbec02ceef655--\r\n"
)
_MPART01 = _msg(
    f"""
MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: {len(_MPART_BODY)}
""",
    _MPART_BODY,
)

_UNREASON = _msg(
    "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f"
    "\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440"
    "\u043e\u0441\u0442\u043e\u0435\n"
    """Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 154
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>
""",
    _sdp("192.0.2.198"),
)

# The space after the status code is required even when the reason phrase is empty.
_NOREASON = _msg(
    "SIP/2.0 100 \n"
    """Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
)

# ---- RFC 4475 3.1.2: invalid messages ------------------------------------------------

_BADINV01 = _msg(
    """
INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: 152
Content-Type: application/sdp
""",
    _sdp("192.0.2.15"),
)

_CLERR = _msg(
    """
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999
""",
    _sdp("192.0.2.155"),
)

_NCL = _msg(
    """
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999
""",
    _sdp("192.0.2.53"),
)

_SCALAR02 = _msg(
    f"""
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1{"0" * 100}
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0
"""
)

_SCALARLG = _msg(
    """
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
"""
)

_QUOTBAL = _msg(
    """
INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 152
""",
    _sdp("192.0.2.15"),
)

_LTGTRURI = _msg(
    """
INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 159
""",
    _sdp("192.0.2.5", t="3149328700 0"),
)

_LWSRURI = _msg(
    """
INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 159
""",
    _sdp("192.0.2.1", t="3149328700 0"),
)

_LWSSTART = _msg(
    """
INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
    _sdp("192.0.2.1"),
)

_TRWS = _msg(
    "OPTIONS sip:remote-target@example.com SIP/2.0  \n"
    """Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0
"""
)

_ESCRURI = _msg(
    """
INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: 150
""",
    _sdp("192.0.2.1"),
)

_BADDATE = _msg(
    """
INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
    _sdp("192.0.2.5"),
)

_REGBADCT = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0
"""
)

_BADASPEC = _msg(
    """
OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0
"""
)

_BADDN = _msg(
    """
OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0
"""
)

_BADVERS = _msg(
    """
OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0
"""
)

_MISMATCH01 = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0
"""
)

_MISMATCH02 = _msg(
    """
NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 138
""",
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n",
)

_BIGCODE = _msg(
    """
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
)

# ---- RFC 4475 3.2 to 3.4: transaction, application and backward-compatibility tests --

_BADBRANCH = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0
"""
)

_INSUF = _msg(
    """
INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 152
""",
    _sdp("192.0.2.95"),
)

_UNKSCM = _msg(
    """
OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
)

_NOVELSC = _msg(
    """
OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
)

_UNKSM2 = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0
"""
)

_BEXT01 = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw
Content-Length: 0
"""
)

_INVUT = _msg(
    """
INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: 40
""",
    b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n',
)

_REGAUT01 = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0
"""
)

_MULTI01 = _msg(
    """
INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: 154
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5
""",
    _sdp("192.0.2.25") + b"\r\n",
)

_MCL01 = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain
""",
    b"There's no way to know how many octets are supposed to be here.\r\n",
)

_BCAST = _msg(
    """
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 154
Content-Type: application/sdp
Contact: <sip:user@host28.example.com>
""",
    _sdp("192.0.2.198"),
)

_ZEROMF = _msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0
"""
)

_CPARAM01 = _msg(
    """
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0
"""
)

_CPARAM02 = _msg(
    """
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=838293
To: sip:watson@example.com
Call-ID: cparam02.70710@saturn.example.com
CSeq: 3 REGISTER
Contact: <sip:+19725552222@gw1.example.net;unknownparam>
l: 0
"""
)

_REGESCRT = _msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0
"""
)

_SDP01 = _msg(
    """
INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyKnowsThis
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw
Content-Length: 150
Content-Type: application/sdp
""",
    _sdp("192.0.2.5"),
)

_INV2543 = _msg(
    """
INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp
""",
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0\r\n",
)


RFC4475 = [
    CorpusEntry(
        "wsinv",
        _WSINV,
        "valid",
        "RFC 4475 3.1.1.1: folding, LWS, compact forms, 0068; To has a tag: 481",
    ),
    CorpusEntry("intmeth", _INTMETH, "valid", "3.1.1.2: unusual token chars; server: 501"),
    CorpusEntry("esc01", _ESC01, "valid", "3.1.1.3: %-escapes in URIs"),
    CorpusEntry("escnull", _ESCNULL, "valid", "3.1.1.4: %00 in user parts"),
    CorpusEntry("esc02", _ESC02, "valid", "3.1.1.5: % is no escape in methods; server: 501"),
    CorpusEntry("lwsdisp", _LWSDISP, "valid", "3.1.1.6: no LWS between display name and <"),
    CorpusEntry("longreq", _LONGREQ, "valid", "3.1.1.7: long values, 34 Vias"),
    CorpusEntry("dblreq", _DBLREQ, "valid", "3.1.1.8: bytes past Content-Length ignored"),
    CorpusEntry("semiuri", _SEMIURI, "valid", "3.1.1.9: ; in the user part"),
    CorpusEntry("transports", _TRANSPORTS, "valid", "3.1.1.10: SCTP, TLS, UNKNOWN Vias"),
    CorpusEntry("mpart01", _MPART01, "valid", "3.1.1.11: binary multipart body"),
    CorpusEntry("unreason", _UNREASON, "valid", "3.1.1.12: UTF-8 reason phrase (response)"),
    CorpusEntry("noreason", _NOREASON, "valid", "3.1.1.13: empty reason phrase (response)"),
    CorpusEntry("badinv01", _BADINV01, 400, "3.1.2.1: ;;,;,, in Via, ;;;; in Contact"),
    CorpusEntry("clerr", _CLERR, 400, "3.1.2.2: Content-Length larger than the datagram"),
    CorpusEntry("ncl", _NCL, 400, "3.1.2.3: negative Content-Length"),
    CorpusEntry("scalar02", _SCALAR02, 400, "3.1.2.4: CSeq over 2**32-1"),
    CorpusEntry("scalarlg", _SCALARLG, "drop", "3.1.2.5: response with CSeq over 2**32-1"),
    CorpusEntry("quotbal", _QUOTBAL, 400, "3.1.2.6: unterminated quote in To"),
    CorpusEntry("ltgtruri", _LTGTRURI, 400, "3.1.2.7: Request-URI in <>"),
    CorpusEntry("lwsruri", _LWSRURI, 400, "3.1.2.8: LWS inside the Request-URI"),
    CorpusEntry("lwsstart", _LWSSTART, 400, "3.1.2.9: two SP between request-line parts"),
    CorpusEntry("trws", _TRWS, 400, "3.1.2.10: SP after SIP/2.0"),
    CorpusEntry("escruri", _ESCRURI, 400, "3.1.2.11: headers in the Request-URI"),
    CorpusEntry("baddate", _BADDATE, "valid", "3.1.2.12: EST in Date, which we do not use"),
    CorpusEntry("regbadct", _REGBADCT, 400, "3.1.2.13: addr-spec with ? outside <>"),
    CorpusEntry("badaspec", _BADASPEC, 400, "3.1.2.14: spaces inside <addr-spec>"),
    CorpusEntry("baddn", _BADDN, 400, "3.1.2.15: unquoted display name with a comma"),
    CorpusEntry(
        "badvers",
        _BADVERS,
        505,
        "3.1.2.16: SIP/7.0, Via too: check validate() before reading the Via",
    ),
    CorpusEntry("mismatch01", _MISMATCH01, 400, "3.1.2.17: OPTIONS with CSeq INVITE"),
    CorpusEntry("mismatch02", _MISMATCH02, 400, "3.1.2.18: RFC prefers 501, allows 400"),
    CorpusEntry("bigcode", _BIGCODE, "drop", "3.1.2.19: status code 4294967301"),
    CorpusEntry("badbranch", _BADBRANCH, "valid", "3.2.1: branch is the bare magic cookie"),
    CorpusEntry("insuf", _INSUF, 400, "3.3.1: no From, To, Call-ID, Max-Forwards"),
    CorpusEntry("unkscm", _UNKSCM, 416, "3.3.2: unknown Request-URI scheme"),
    CorpusEntry("novelsc", _NOVELSC, 416, "3.3.3: soap.beep Request-URI"),
    CorpusEntry("unksm2", _UNKSM2, 400, "3.3.4: isbn: in To, http: in From (400, not 416)"),
    CorpusEntry("bext01", _BEXT01, "valid", "3.3.5: unknown Require; server: 420"),
    CorpusEntry("invut", _INVUT, "valid", "3.3.6: unknown Content-Type; RFC 4475 expects 415"),
    CorpusEntry("regaut01", _REGAUT01, "valid", "3.3.7: unknown auth scheme"),
    CorpusEntry("multi01", _MULTI01, 400, "3.3.8: two CSeq, Call-ID, To, From"),
    CorpusEntry("mcl01", _MCL01, 400, "3.3.9: two different Content-Length values"),
    CorpusEntry("bcast", _BCAST, "valid", "3.3.10: broadcast Via (response)"),
    CorpusEntry("zeromf", _ZEROMF, "valid", "3.3.11: OPTIONS with Max-Forwards 0"),
    CorpusEntry("cparam01", _CPARAM01, "valid", "3.3.12: header param on an addr-spec"),
    CorpusEntry("cparam02", _CPARAM02, "valid", "3.3.13: URI param inside <>"),
    CorpusEntry("regescrt", _REGESCRT, "valid", "3.3.14: escaped header inside <>"),
    CorpusEntry("sdp01", _SDP01, "valid", "3.3.15: Accept without SDP; RFC 4475 expects 406"),
    CorpusEntry(
        "inv2543",
        _INV2543,
        "valid",
        "3.4.1: RFC 2543 INVITE; our UA answers 400 for its missing Contact",
    ),
]


# ---- our own -------------------------------------------------------------------------

_BASE_HEADERS = (
    ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-corpus;rport"),
    ("Max-Forwards", "70"),
    ("From", '"Alice" <sip:alice@example.com>;tag=a1'),
    ("To", "<sip:bob@example.com>"),
    ("Call-ID", "corpus-1@192.0.2.1"),
    ("CSeq", "1 {method}"),
    ("Contact", "<sip:alice@192.0.2.1:5060>"),
)


def _req(
    method: str = "OPTIONS",
    uri: str = "sip:bob@example.com",
    *,
    start: str | None = None,
    without: tuple[str, ...] = (),
    change: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    length: str | None = None,
) -> bytes:
    """A well-formed request, then bent: a start line, headers left out, values changed
    (or added, for names not in the base set), a wrong Content-Length."""
    changed = dict(change)
    lines = [start if start is not None else f"{method} {uri} SIP/2.0"]
    for name, value in _BASE_HEADERS:
        if name not in without:
            lines.append(f"{name}: {changed.pop(name, value.format(method=method))}")
    lines += [f"{name}: {value}" for name, value in changed.items()]
    if "Content-Length" not in without:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


_RANDOM = random.Random(4475)
_INVITE_SDP = _sdp("192.0.2.1")

OURS = [
    # start lines
    CorpusEntry("start-no-version", _req(start="OPTIONS sip:bob@example.com"), "drop"),
    CorpusEntry("start-http", _req(start="GET / HTTP/1.1"), "drop", "not SIP at all"),
    CorpusEntry("start-bad-method", _req(start="OPT(IONS sip:bob@example.com SIP/2.0"), "drop"),
    CorpusEntry("start-bad-version", _req(start="OPTIONS sip:bob@example.com SIP/two"), "drop"),
    CorpusEntry("start-empty", b"\r\nVia: SIP/2.0/UDP h\r\n\r\n", "drop", "no start line"),
    CorpusEntry("status-2-digits", b"SIP/2.0 20 OK\r\nCall-ID: x\r\n\r\n", "drop"),
    CorpusEntry("status-700", b"SIP/2.0 700 Seven\r\nCall-ID: x\r\n\r\n", "drop"),
    CorpusEntry("version-3", _req(start="OPTIONS sip:bob@example.com SIP/3.0"), 505),
    CorpusEntry(
        "version-lower-case",
        _req(start="OPTIONS sip:bob@example.com sip/2.0"),
        "valid",
        "SIP-Version is case-insensitive (RFC 3261 7.1)",
    ),
    CorpusEntry("leading-crlf", b"\r\n\r\n" + _req(), "valid", "RFC 3261 7.5"),
    CorpusEntry("lf-line-ends", _req().replace(b"\r\n", b"\n"), "valid", "tolerated"),
    # mandatory headers (RFC 3261 8.1.1)
    CorpusEntry("missing-via", _req(without=("Via",)), 400, "server: drop, nowhere to answer"),
    CorpusEntry("missing-from", _req(without=("From",)), 400),
    CorpusEntry("missing-to", _req(without=("To",)), 400),
    CorpusEntry("missing-call-id", _req(without=("Call-ID",)), 400),
    CorpusEntry("missing-cseq", _req(without=("CSeq",)), 400),
    CorpusEntry(
        "missing-max-forwards",
        _req(without=("Max-Forwards",)),
        "valid",
        "RFC 2543 peers: treated as 70",
    ),
    # Content-Length (RFC 3261 18.3, 20.14)
    CorpusEntry("cl-larger", _req("INVITE", body=_INVITE_SDP, length="500"), 400),
    CorpusEntry("cl-non-numeric", _req("INVITE", body=_INVITE_SDP, length="five"), 400),
    CorpusEntry("cl-negative", _req("INVITE", body=_INVITE_SDP, length="-1"), 400),
    CorpusEntry(
        "cl-unicode-digit", _req(length="\u00b2"), 400, "superscript two: str.isdigit() is True"
    ),
    CorpusEntry(
        "cl-smaller",
        _req("INVITE", body=_INVITE_SDP, length="10"),
        "valid",
        "datagram: the rest is discarded",
    ),
    CorpusEntry(
        "cl-missing-udp",
        _req("INVITE", body=_INVITE_SDP, without=("Content-Length",)),
        "valid",
        "datagram: the rest is the body",
    ),
    CorpusEntry("cl-leading-zeros", _req("INVITE", body=_INVITE_SDP, length="00150"), "valid"),
    CorpusEntry("cl-response-larger", b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc", "drop"),
    # garbage
    CorpusEntry("empty", b"", "drop"),
    CorpusEntry("keepalive", b"\r\n\r\n", "drop", "a CRLF ping, not a message"),
    CorpusEntry("random-binary", _RANDOM.randbytes(1024), "drop"),
    CorpusEntry("nul-bytes", b"\x00" * 200, "drop"),
    CorpusEntry("nul-in-start-line", _req(start="OPTIONS sip:bob@exa\x00mple.com SIP/2.0"), 400),
    CorpusEntry(
        "non-utf8-header",
        _req(change=(("Subject", "cafe"),)).replace(b"cafe", b"caf\xe9"),
        "drop",
        "headers must be UTF-8",
    ),
    CorpusEntry(
        "non-utf8-body",
        _req(
            "MESSAGE",
            body=b"\xff\xfe\x00\x80binary",
            change=(("Content-Type", "application/octet-stream"),),
        ),
        "valid",
    ),
    CorpusEntry(
        "header-without-colon",
        _req(change=(("Subject hello", ""),)).replace(b"Subject hello: ", b"Subject hello"),
        "drop",
    ),
    CorpusEntry("header-name-space", _req(change=(("X-A", "1"),)).replace(b"X-A", b"X A"), "drop"),
    CorpusEntry(
        "fold-before-first",
        _req(start="OPTIONS sip:bob@example.com SIP/2.0\r\n x"),
        "drop",
        "continuation line before any header",
    ),
    CorpusEntry(
        "bare-cr",
        _req(change=(("Subject", "a\rVia: SIP/2.0/UDP evil"),)),
        "drop",
        "would smuggle a header into echoed responses",
    ),
    CorpusEntry(
        "too-many-headers", _req(change=tuple((f"X-H{i}", "1") for i in range(250))), "drop"
    ),
    # size (RFC 3261 18.1.1, 21.5.14)
    CorpusEntry(
        "oversize-body",
        _req("MESSAGE", body=b"x" * 70000, change=(("Content-Type", "text/plain"),)),
        513,
    ),
    CorpusEntry("oversize-garbage", b"A" * 70000, "drop"),
    CorpusEntry(
        "oversize-header",
        _req(change=(("Subject", "y" * 70000),)),
        "drop",
        "the head alone is over the limit",
    ),
    # methods: unknown ones frame and validate; the server answers 501 or 405
    CorpusEntry("unknown-method", _req("FOO"), "valid", "server: 501"),
    CorpusEntry("publish", _req("PUBLISH"), "valid", "server: 405 or 501"),
    CorpusEntry(
        "cseq-method-case", _req(change=(("CSeq", "1 options"),)), 400, "methods are case-sensitive"
    ),
    CorpusEntry("cseq-not-number", _req(change=(("CSeq", "one OPTIONS"),)), 400),
    CorpusEntry("cseq-2-32", _req(change=(("CSeq", "4294967296 OPTIONS"),)), 400),
    CorpusEntry("cseq-tab", _req(change=(("CSeq", "1\tOPTIONS"),)), "valid", "LWS is SP/HTAB"),
    # Request-URIs
    CorpusEntry("ruri-no-host", _req(uri="sip:"), 400),
    CorpusEntry("ruri-empty-user", _req(uri="sip:@example.com"), 400),
    CorpusEntry("ruri-port-0", _req(uri="sip:bob@example.com:0"), 400),
    CorpusEntry("ruri-port-70000", _req(uri="sip:bob@example.com:70000"), 400),
    CorpusEntry("ruri-bad-host", _req(uri="sip:bob@exa_mple.com"), 400),
    CorpusEntry("ruri-bad-ipv4", _req(uri="sip:bob@256.0.0.1"), 400),
    CorpusEntry("ruri-ipv6-open", _req(uri="sip:bob@[2001:db8::1"), 400),
    CorpusEntry("ruri-empty-param", _req(uri="sip:bob@example.com;;lr"), 400),
    CorpusEntry("ruri-ipv6", _req(uri="sip:bob@[2001:db8::1]:5070;transport=tcp"), "valid"),
    CorpusEntry(
        "ruri-tel",
        _req(
            "INVITE",
            uri="tel:+1-201-555-0123",
            body=_INVITE_SDP,
            change=(("Content-Type", "application/sdp"),),
        ),
        "valid",
    ),
    CorpusEntry("ruri-mailto", _req(uri="mailto:bob@example.com"), 416),
    CorpusEntry("ruri-http", _req(uri="http://example.com/"), 416),
    CorpusEntry("ruri-no-scheme", _req(uri="bob@example.com"), 400),
    # other headers
    CorpusEntry(
        "max-forwards-0",
        _req(
            "INVITE",
            body=_INVITE_SDP,
            change=(("Max-Forwards", "0"), ("Content-Type", "application/sdp")),
        ),
        483,
    ),
    CorpusEntry("max-forwards-256", _req(change=(("Max-Forwards", "256"),)), 400),
    CorpusEntry("max-forwards-word", _req(change=(("Max-Forwards", "seventy"),)), 400),
    CorpusEntry("call-id-space", _req(change=(("Call-ID", "a b@host"),)), 400),
    CorpusEntry("via-no-host", _req(change=(("Via", "SIP/2.0/UDP ;branch=z9hG4bKx"),)), 400),
    CorpusEntry("via-not-sip", _req(change=(("Via", "HTTP/1.1/TCP host;branch=z9hG4bKx"),)), 400),
    CorpusEntry(
        "via-tab",
        _req(change=(("Via", "SIP/2.0/UDP\thost.example.com;branch=z9hG4bKx"),)),
        "valid",
        "LWS is SP/HTAB",
    ),
    CorpusEntry("from-unterminated", _req(change=(("From", "<sip:alice@example.com;tag=1"),)), 400),
    CorpusEntry(
        "from-mailto",
        _req(change=(("From", "<mailto:alice@example.com>;tag=1"),)),
        400,
        "416 is for the Request-URI only",
    ),
    CorpusEntry("contact-bad-uri", _req(change=(("Contact", "<sip:alice@>"),)), 400),
    CorpusEntry(
        "to-tag-in-uri",
        _req(change=(("To", "<sip:bob@example.com;tag=x>"),)),
        "valid",
        "a URI parameter, not the To tag (RFC 3261 20.10)",
    ),
]

CORPUS: list[CorpusEntry] = RFC4475 + OURS
