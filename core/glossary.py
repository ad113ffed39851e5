"""A small English -> Chinese customer-service glossary, for visitors who mix the two.

Chinese visitors often type the English word for the thing they mean (``refund怎么弄``,
``points怎么用``, ``gift wrap``). A Chinese-only intent set or help centre then has no
feature in common with the message. :func:`glossary_terms` gives the Chinese words of the
English ones found in a text; :func:`kefu.core.text.expand_glossary` appends them, and the
bot's Chinese feature blocks read the expanded text (docs/bot.md, "Chinese").

Written by hand for online-shop customer service: orders, delivery, after-sales, payment,
accounts, membership and courtesy words. A key is one lower-case word (after NFKC folding)
or two words joined by a space; each maps to one or more Chinese words. Nothing here is
specific to one dataset; a site with another vocabulary adds its own words to its flows.
"""

from __future__ import annotations

import functools
import re

# key words (space-separated alternatives; "a+b" is the two-word phrase "a b") -> Chinese
_ENTRIES = """
order orders	订单
track tracking trace	物流 查询
status	状态
logistics	物流
package parcel	包裹
cancel cancelled canceled cancellation	取消
refund refunds refunded reimburse	退款
money+back	退钱
return returns	退货
exchange swap	换货
replace replacement	换货
ship shipping shipped dispatch	发货
deliver delivery delivered	送达 配送
arrive arrival arrived	到货
fee fees cost postage	费用 运费
free+shipping	包邮
address addr	地址
change modify edit	修改
wrong	错
invoice receipt	发票
pay payment paid	付款 支付
failed fail failure error	失败
method methods	方式
card	卡
coupon coupons voucher promo	优惠券
discount	优惠 折扣
price prices	价格
cheaper	降价
stock availability available	库存 有货
sold+out	缺货
size sizes sizing	尺码
warranty guarantee	保修
repair fix	维修
broken damaged damage defective	损坏 坏了
missing	少 漏发
account	账号
login signin logon	登录
log+in sign+in	登录
password pwd	密码
forgot forget	忘记
reset	重置
phone mobile	手机
number	号码
member membership vip	会员
renew renewal subscription	续费
points point	积分
redeem	兑换
human person agent staff	人工 客服
customer+service support	客服
complain complaint	投诉
hours opening	营业 时间
courier express	快递
urgent hurry asap	催 快
presale preorder	预售
pre-sale pre-order	预售
deposit	定金
gift	礼物 送人
wrap wrapping	包装
hi hello hey	你好
thanks thank thx ty	谢谢
please pls plz	请
help	帮忙
"""

_LATIN_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for line in _ENTRIES.strip().splitlines():
        keys, chinese = line.split("\t")
        words = tuple(chinese.split())
        for key in keys.split():
            table[key.replace("+", " ")] = words
    return table


def glossary_terms(text: str) -> list[str]:
    """The Chinese words of the glossary entries in already-normalised (lower-case) ``text``.

    A two-word phrase wins over its single words (``free shipping`` -> 包邮).
    """
    words = _LATIN_WORD.findall(text)
    if not words:
        return []
    table = _table()
    terms: list[str] = []
    i = 0
    while i < len(words):
        pair = f"{words[i]} {words[i + 1]}" if i + 1 < len(words) else None
        if pair is not None and pair in table:
            terms.extend(table[pair])
            i += 2
            continue
        terms.extend(table.get(words[i], ()))
        i += 1
    return terms


__all__ = ["glossary_terms"]
