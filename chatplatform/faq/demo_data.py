# ruff: noqa: E501  (prose content: long answer strings read better unwrapped)
"""FAQ content of the demo site: an online shop ("Northwind Outfitters"). Each entry is
(canonical question, answer, alternative phrasings). Used by `manage.py load_demo_site`."""

from __future__ import annotations

DEMO_SITE_NAME = "Northwind Outfitters (demo shop)"
DEMO_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]
DEMO_GREETING = (
    "Hi! I'm the Northwind assistant. Ask me about orders, shipping, returns or payments."
)

FAQS: list[tuple[str, str, list[str]]] = [
    # --- Shipping ---
    (
        "How long does shipping take?",
        "Standard shipping takes 3-5 business days within the country; express takes 1-2 business "
        "days. You get a tracking link by e-mail as soon as your parcel leaves our warehouse.",
        [
            "How many days until my package arrives?",
            "What is the delivery time?",
            "When will my order be delivered?",
            "how long is delivery",
        ],
    ),
    (
        "How much does shipping cost?",
        "Standard shipping is free on orders over $50 and $4.95 below that. Express shipping costs "
        "$12.95 on any order.",
        [
            "What are the delivery charges?",
            "Is shipping free?",
            "How much is postage?",
            "do you charge for delivery",
        ],
    ),
    (
        "Do you ship internationally?",
        "Yes, we ship to 38 countries in Europe, North America and Asia-Pacific. International "
        "delivery takes 7-14 business days; duties are shown at checkout.",
        [
            "Can you deliver abroad?",
            "Do you ship outside the country?",
            "Can I order from another country?",
            "international delivery",
        ],
    ),
    (
        "How can I track my order?",
        "Open the tracking link in your shipping confirmation e-mail, or sign in and go to "
        "Account > Orders > Track. Tracking updates can take up to 24 hours to appear.",
        [
            "Where is my package?",
            "How do I track my parcel?",
            "Is there a tracking number?",
            "where can i see my shipment status",
        ],
    ),
    (
        "Can I change my shipping address after ordering?",
        "You can change the address within 1 hour of ordering under Account > Orders > Edit. After "
        "that the parcel is being packed; contact us and we will try to redirect it.",
        [
            "I entered the wrong address, can I fix it?",
            "How do I update the delivery address?",
            "Can I ship my order to a different address?",
            "wrong shipping address",
        ],
    ),
    (
        "Do you deliver on weekends?",
        "Express orders are delivered on Saturdays in most cities. Standard shipping is delivered "
        "Monday to Friday.",
        [
            "Is there Saturday delivery?",
            "Can I get my order on Sunday?",
            "do couriers deliver at the weekend",
        ],
    ),
    (
        "Can I pick up my order in a store?",
        "Yes. Choose 'Click & Collect' at checkout; your order is ready in the chosen store within 2 "
        "hours during opening times. Bring your order number and an ID.",
        [
            "Is click and collect available?",
            "Can I collect my order myself?",
            "Do you offer in-store pickup?",
            "pick up in shop",
        ],
    ),
    (
        "My package says delivered but I did not receive it",
        "Please check with neighbours and your building's mailroom first. If it has not turned up "
        "within 48 hours, contact us and we will open an investigation with the carrier and send a "
        "replacement or refund.",
        [
            "Tracking shows delivered but nothing arrived",
            "My parcel is missing",
            "The courier says delivered but I don't have it",
            "lost package",
        ],
    ),
    # --- Returns ---
    (
        "What is your return policy?",
        "You can return unworn items with their tags within 30 days of delivery for a full refund. "
        "Sale items can be returned within 14 days.",
        [
            "Can I return an item?",
            "How many days do I have to return something?",
            "What's the returns policy?",
            "is there a return window",
        ],
    ),
    (
        "How do I return an item?",
        "Go to Account > Orders, choose the order and click 'Return items'. Print the prepaid label, "
        "pack the items and drop the parcel at any post office.",
        [
            "How do I send something back?",
            "What are the steps to make a return?",
            "How can I start a return?",
            "return process",
        ],
    ),
    (
        "Are returns free?",
        "Returns are free with the prepaid label for orders within the country. International "
        "returns cost $9.95, deducted from the refund.",
        [
            "Do I have to pay for return shipping?",
            "Is the return label free?",
            "how much does it cost to return",
        ],
    ),
    (
        "When will I get my refund?",
        "We refund within 3 business days of receiving your return. Your bank may take a further 3-5 "
        "business days to show it on your statement.",
        [
            "How long does a refund take?",
            "I returned my order, where is my money?",
            "When do I get my money back?",
            "refund timing",
        ],
    ),
    (
        "Can I exchange an item for a different size?",
        "Yes. Start a return and choose 'Exchange' with the new size; we ship the replacement as soon "
        "as the carrier scans your return parcel, at no extra cost.",
        [
            "How do I swap for another size?",
            "The shoes are too small, can I exchange them?",
            "Can I get a different colour instead?",
            "size exchange",
        ],
    ),
    (
        "What if my item arrived damaged or faulty?",
        "We are sorry! Send us a photo of the damage through Account > Orders > Report a problem "
        "within 14 days and we will send a replacement or refund, including shipping.",
        [
            "My item is broken",
            "The product arrived damaged",
            "I received a defective item",
            "what do i do with a faulty product",
        ],
    ),
    (
        "I received the wrong item",
        "Sorry about that. Report it under Account > Orders > Report a problem; we send the right "
        "item right away and a prepaid label to return the wrong one.",
        [
            "You sent me the wrong product",
            "This is not what I ordered",
            "My order contains the wrong size",
            "wrong item delivered",
        ],
    ),
    # --- Payments ---
    (
        "What payment methods do you accept?",
        "We accept Visa, Mastercard, American Express, PayPal, Apple Pay, Google Pay and gift cards.",
        [
            "Can I pay with PayPal?",
            "Which cards do you take?",
            "How can I pay?",
            "do you accept amex",
        ],
    ),
    (
        "Can I pay in instalments?",
        "Yes, orders over $100 can be split into 3 interest-free monthly instalments with Klarna at "
        "checkout.",
        [
            "Do you offer buy now pay later?",
            "Can I split the payment?",
            "Is Klarna available?",
            "pay in installments",
        ],
    ),
    (
        "Why was my payment declined?",
        "Declines usually come from the bank: check the card number, expiry date, billing address "
        "and 3-D Secure confirmation. If it still fails, try another method or contact your bank.",
        [
            "My card was refused",
            "Payment failed at checkout",
            "Why won't my card go through?",
            "transaction declined",
        ],
    ),
    (
        "I was charged twice for my order",
        "A second charge is usually a pending authorisation that disappears within 5 business days. "
        "If both charges are still there after that, contact us with your order number and we will "
        "refund the duplicate.",
        [
            "Double charge on my card",
            "I see two payments for one order",
            "Why was I billed twice?",
            "duplicate charge",
        ],
    ),
    (
        "Do you charge sales tax?",
        "Prices include VAT for EU orders. For US orders sales tax is calculated at checkout based on "
        "the delivery address.",
        ["Are taxes included in the price?", "Is VAT included?", "Will I pay tax on my order?"],
    ),
    (
        "How do I use a discount code?",
        "Enter the code in the 'Discount code' field on the checkout page and click Apply. Only one "
        "code can be used per order.",
        [
            "Where do I enter a promo code?",
            "How do I apply a coupon?",
            "My voucher code doesn't work",
            "promotion code",
        ],
    ),
    (
        "Do you sell gift cards?",
        "Yes, digital gift cards from $10 to $500 are sent by e-mail and never expire. Buy them on "
        "the Gift Cards page.",
        ["Can I buy a gift voucher?", "Do you have gift certificates?", "how do gift cards work"],
    ),
    (
        "Which currency will I be charged in?",
        "You are charged in the currency shown at checkout, which follows your delivery country. "
        "Your bank may add a conversion fee for foreign currencies.",
        ["Can I pay in euros?", "What currency are prices in?", "Do you charge in dollars?"],
    ),
    # --- Orders ---
    (
        "Can I cancel my order?",
        "You can cancel within 1 hour of ordering under Account > Orders > Cancel. After that the "
        "order is being packed; you can return it for free once it arrives.",
        [
            "How do I cancel an order?",
            "I want to cancel my purchase",
            "Is it too late to cancel?",
            "cancel order",
        ],
    ),
    (
        "Can I change or add items to my order?",
        "Orders cannot be changed once placed. Within 1 hour you can cancel and order again; after "
        "that please place a new order for extra items.",
        [
            "How do I modify my order?",
            "Can I add something to my order?",
            "I want to change the size in my order",
        ],
    ),
    (
        "How do I know my order went through?",
        "You receive an order confirmation e-mail within a few minutes, and the order appears under "
        "Account > Orders. Check your spam folder if the e-mail has not arrived.",
        [
            "I didn't get an order confirmation",
            "Was my order placed?",
            "How can I check my order was successful?",
            "no confirmation email",
        ],
    ),
    (
        "Some items are missing from my order",
        "Large orders sometimes ship in several parcels: check your shipping e-mails for a second "
        "tracking number. If an item is missing from a delivered order, report it under "
        "Account > Orders > Report a problem.",
        ["My order was incomplete", "Not all items arrived", "An item is missing from my parcel"],
    ),
    (
        "When will an out-of-stock item be back?",
        "Click 'Notify me' on the product page and we e-mail you as soon as it is back in stock. "
        "Most items are restocked within 2-4 weeks.",
        [
            "Will this product be restocked?",
            "The size I want is sold out",
            "When do you get new stock?",
            "back in stock",
        ],
    ),
    (
        "Can I order by phone?",
        "We don't take orders by phone, but our support team can help you place an order online at "
        "+1 555 0100, Monday to Friday 9:00-18:00.",
        ["Is there a phone number to place an order?", "Can I buy over the telephone?"],
    ),
    (
        "Do you offer gift wrapping?",
        "Yes, choose gift wrapping at checkout for $3.95 per order. We add a card with your message "
        "and leave out the prices.",
        [
            "Can you wrap my order as a present?",
            "Is gift packaging available?",
            "can you send it as a gift",
        ],
    ),
    (
        "Is there a price match guarantee?",
        "If you find the same item cheaper from an authorised retailer within 14 days of purchase, "
        "we refund the difference. Contact us with a link to the offer.",
        ["Do you match prices?", "I found it cheaper elsewhere", "Will you refund the difference?"],
    ),
    # --- Accounts ---
    (
        "How do I reset my password?",
        "Click 'Sign in', then 'Forgot password', and enter your e-mail address. The reset link "
        "arrives within a few minutes and is valid for 24 hours.",
        [
            "I forgot my password",
            "How can I change my password?",
            "I can't log in",
            "password reset link",
        ],
    ),
    (
        "How do I create an account?",
        "Click 'Sign in' then 'Create account', enter your e-mail address and choose a password. You "
        "can also create one at checkout.",
        ["How do I sign up?", "How can I register?", "Do I need an account to order?"],
    ),
    (
        "Can I order without an account?",
        "Yes, choose 'Checkout as guest'. You can still track your order with the link in the "
        "confirmation e-mail.",
        [
            "Can I check out as a guest?",
            "Do I have to register to buy something?",
            "guest checkout",
        ],
    ),
    (
        "How do I delete my account?",
        "Go to Account > Privacy > Delete account. We erase your personal data within 30 days, "
        "except what we must keep for tax purposes.",
        [
            "How can I close my account?",
            "Remove my account and data",
            "I want to delete my profile",
        ],
    ),
    (
        "How do I change my e-mail address?",
        "Sign in and go to Account > Profile > E-mail. We send a confirmation link to the new "
        "address before the change takes effect.",
        ["How do I update my email?", "Can I change the email on my account?"],
    ),
    (
        "How do I unsubscribe from your newsletter?",
        "Click 'Unsubscribe' at the bottom of any newsletter, or untick 'Newsletter' under "
        "Account > Preferences.",
        [
            "Stop sending me emails",
            "How do I opt out of marketing e-mails?",
            "unsubscribe newsletter",
        ],
    ),
    (
        "Is my personal data safe?",
        "We only use your data to process orders and, if you agree, to send offers. Payments are "
        "handled by PCI-DSS certified providers; we never store full card numbers.",
        ["How do you use my data?", "Do you store my card details?", "privacy policy"],
    ),
    # --- Products and loyalty ---
    (
        "How do I find my size?",
        "Each product page has a 'Size guide' link with measurements in cm and inches. If you are "
        "between sizes, we recommend the larger one.",
        ["What size should I order?", "Do your clothes run small?", "Is there a size chart?"],
    ),
    (
        "How does the loyalty programme work?",
        "Members earn 1 point per $1 spent; 100 points give a $5 voucher. Joining is free under "
        "Account > Rewards.",
        ["Do you have a rewards program?", "How do I earn points?", "What are loyalty points?"],
    ),
    (
        "Do you offer a student discount?",
        "Yes, students get 10% off full-price items after verifying their status with UNiDAYS on our "
        "Student Discount page.",
        ["Is there a discount for students?", "student code"],
    ),
    (
        "How do I wash and care for my items?",
        "Follow the care label inside each item. Most of our cotton products can be machine washed at "
        "30°C; wool and down items should be hand washed or dry cleaned.",
        ["What are the washing instructions?", "Can I put this in the dryer?"],
    ),
    (
        "Do your products have a warranty?",
        "Outerwear and footwear carry a 2-year warranty against manufacturing defects. Report an "
        "issue under Account > Orders > Report a problem with a photo.",
        ["Is there a guarantee on my jacket?", "What does the warranty cover?"],
    ),
    # --- Contact ---
    (
        "How can I contact customer service?",
        "Chat with us here any time, e-mail support@northwind.example, or call +1 555 0100, Monday "
        "to Friday 9:00-18:00.",
        ["What is your phone number?", "How do I talk to a person?", "customer support email"],
    ),
    (
        "Where are your stores?",
        "We have 12 stores; the Store Locator page lists addresses and opening times.",
        ["Do you have a shop near me?", "Store locations", "What are your opening hours?"],
    ),
]
