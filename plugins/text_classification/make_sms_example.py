"""Write ``pipelines/data/sms-example.tsv``: a small SMS-format example file made by the project.

The messages below are hand-written and invented: no real messages, people, brands, web
sites or phone numbers. Each one is its own wording, not a template with words swapped in.
Ham is everyday personal texting in many registers (plans, lateness, family, flatmates,
shifts, school runs, sport, health, condolences, jokes, shopping lists, directions, one-word
replies, typos and "u"/"2nite" spellings), and some of it talks about money, prizes,
banks, deliveries, codes or phone numbers so those are no giveaway. Spam is many different
scams and adverts (prize draws, delivery fees, bank phishing, crypto, loans, chat lines,
premium-rate competitions, ringtone subscriptions, refunds, job offers, surveys,
voicemail, casino, retail), of many lengths and styles; only some carry a short code or a
premium number. They are varied like real SMS spam so that the spam-detection demo measures
how well a model generalises to messages it has not seen, not how well it remembers a few
dozen templates (a model trained from scratch scored 100 % on the old template-made file).

Phone numbers come from the UK ranges Ofcom reserves for drama (07700 900xxx, 01632 960xxx,
0808 157 0xxx, 0909 879 0xxx), web sites use the reserved ``.example`` domain, so none can
reach anyone.

The output is in the SMS Spam Collection's format: ``ham<TAB>text`` or ``spam<TAB>text``,
UTF-8, one message per line, no header, ham and spam interleaved in a fixed shuffled order
(``random.Random(SEED)``). No text contains a tab or starts with a quote, and no two are the
same ignoring case and spacing (``check``), so the file reads the same as ``format: sms`` and
as ``format: tsv``. Regenerate with::

    python -m tlengine_plugins.text_classification.make_sms_example \\
        plugins/text_classification/pipelines/data/sms-example.tsv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

__all__ = ["HAM", "SEED", "SPAM", "check", "main", "messages"]

SEED = 20240611

HAM: list[str] = [
    "Are we still on for coffee at 11?",
    "Fancy the cinema on Friday? That new horror one is out",
    "I'm at the bar near the window, already got you a drink",
    "Shall we say half 7 at the usual place",
    "Can't do Thursday after all, how's next week looking for you?",
    "k see u there",
    "Ok",
    "ok cool",
    "Yep",
    "Sounds good to me",
    "On my way",
    "omw",
    "Here now, standing by the ticket machines",
    "where r u? im by the fountain",
    "Traffic on the ring road is a nightmare, I'll be late",
    "Sorry sorry sorry, overslept. Give me 20 mins",
    "Bus never turned up so I'm getting a taxi",
    "Train cancelled. Next one's at 6.42, will text when I'm on it",
    "Leaving now, about a quarter of an hour away",
    "Just parked, which entrance are you at?",
    "Table's booked for 8 under my name",
    "Do you want to come round for tea on Sunday? Nothing fancy",
    "We're going bowling Saturday afternoon if you want in",
    "Anyone up for a curry after work tomorrow",
    "I can meet you halfway if that's easier",
    "Is it still ok if I crash at yours on Friday?",
    "What's the plan for tonight then",
    "no rush, im still getting ready",
    "I'm in the queue, want anything?",
    "Let me know when you're nearly here and I'll come down",
    "Might be a bit late, need to drop the car off first",
    "Got held up at the dentist, still coming though",
    "Have a lovely time tonight, tell me everything tomorrow",
    "Can we push it back an hour? Work is mental today",
    "I'll grab a seat upstairs",
    "see u in 5",
    "Door's open, just come in",
    "We're at the back table near the toilets lol",
    "Lunch tomorrow? My treat for once",
    "How about the Italian place on the corner, they've reopened",
    "Fine by me",
    "Sure, what time suits?",
    "Nah can't tonight, totally skint till payday",
    "I'm free after 4 if you want to pop over",
    "Are you free tonight? Need a hand getting the wardrobe up the stairs",
    "free tonight? fancy a film and a takeaway at mine",
    "i'll be there about 2ish depending on the buses",
    "Save me a seat near the front",
    "We'll wait for you before we order",
    "Gate 14, boarding in half an hour",
    "Stuck behind a tractor, this could take a while",
    "My lift fell through, any chance you could pick me up from the station?",
    "Missed the last bus. Walking back, should be home by 1",
    "The roadworks by the bridge are still there so go the back way",
    "Signal is awful here, if I cut out that's why",
    "Flight delayed 2 hours, so annoying",
    "Just landed! Waiting for bags",
    "Car won't start again. Battery I think",
    "Can you move your car, you've blocked me in",
    "Parking is a nightmare here, been circling for ages",
    "nearly there, 2 stops",
    "Mum, can you ring me when you get a minute? Nothing urgent",
    "Dad's fallen asleep in front of the telly again",
    "Nan says thank you for the flowers, she loved them",
    "Can you pick Ellie up from football at 5? I'm stuck at work",
    "Reminder that it's Grandad's 80th on the 14th, the card is on the fridge",
    "Kids are in bed, finally. Glass of wine time",
    "Has Josh eaten anything today? He said he wasn't hungry at school",
    "Your sister's baby arrived this morning! A little girl, both doing well",
    "Tell your dad his glasses are on the kitchen table",
    "Auntie Pat wants to know if you're coming for Christmas",
    "Mum left her phone here, if she texts you from a different number that's why",
    "Can you check on Grandma this afternoon, she's not answering the landline",
    "Dinner's in the oven, just heat it up when you're back",
    "did u take my hoodie? the grey one",
    "Stop eating all the biscuits, they're for the guests!",
    "Be good at school today, love you",
    "Daisy lost a tooth! The fairy owes her a pound apparently",
    "We're at the hospital with Dad for his check up, all fine so far",
    "Can the boys stay over Saturday? I'll bring their sleeping bags",
    "Your brother passed his driving test!!",
    "Happy anniversary Mum and Dad, 30 years, amazing",
    "Mum wants everyone round on Sunday at 1 for a roast",
    "The baby's finally sleeping through, I feel human again",
    "Uncle Rob's on speaker, say hello when you get in",
    "Who's picking Nan up from the airport, me or you?",
    "Whoever used the last of the milk please buy more",
    "Bins go out tonight, your turn I think",
    "Landlord's coming round at 10 tomorrow to look at the boiler",
    "The hot water's off again, I've reported it",
    "Can you keep the noise down a bit, I've got an exam at 9",
    "Left the rent money on your desk",
    "There's a parcel for you on the stairs",
    "Are you in? I forgot my key",
    "Someone's left the back door open all night again",
    "Party at ours on Saturday, tell whoever",
    "Need to sort the electric bill, it's 63.40 each this quarter",
    "I'm doing a big shop tomorrow, add stuff to the list on the fridge",
    "The washing machine's making that noise again",
    "Your mum called the house phone, wants you to ring her",
    "Can I borrow your hoover? Mine's died",
    "Heating is set to come on at 6 now, let me know if that's too early",
    "I cleaned the bathroom so you're doing the kitchen this week ok",
    "someone ate my leftover lasagne and i want answers",
    "New flatmate moves in on the 1st, she seems nice",
    "Can you cover my shift on Saturday? I'll do your Tuesday",
    "Rota's up for next week, you're on lates",
    "I'm on earlies till Friday so can't do evenings",
    "Manager wants everyone in at 8 for a stocktake",
    "Running the meeting from home today, ping me if anything comes up",
    "Sent you the slides, have a look before 3",
    "Client moved the call to 4.30",
    "Just got out of my review. Payrise!!",
    "Boss is in a foul mood, keep your head down",
    "Can't text, in training all day",
    "Thanks for covering earlier, I owe you one",
    "Handed my notice in today, feel weird about it",
    "The printer's jammed again, I give up",
    "Any idea where the spare keys for the van are?",
    "Finishing at 6 tonight instead of 5, sorry",
    "Interview went really well, they said they'll let me know Friday",
    "First day done, everyone seems nice",
    "Could you email me the figures from last month when you get a sec",
    "Night shift again, see you in the morning",
    "I've been asked to do overtime Sunday, double pay so I said yes",
    "Payroll messed up again, half my overtime is missing",
    "Staff do is on the 20th, are you going?",
    "Till was £10 down at close, can you check the receipts tomorrow",
    "I'll do the school run tomorrow, you did it twice this week",
    "School's closed tomorrow, their boiler's broken",
    "Don't forget it's non uniform day, £1 for charity",
    "Can you grab Mia at 3.15? Her class gets out early today",
    "PE kit is in the hall, make sure he takes it",
    "Parents evening is at 5.40, can you make it?",
    "Mia's got nits AGAIN",
    "Packed lunches are made, they're in the fridge",
    "Late for drop off, my turn to explain myself to the office lady",
    "The school wants 12 pounds for the trip by Friday",
    "Homework club finishes at 4.30, not 4",
    "Five-a-side is on tonight, 7pm, we need a keeper",
    "Did you see that goal?? Unreal",
    "We lost 3-1, ref was useless",
    "Gym at 6 tomorrow morning? Don't bail on me again",
    "My legs are dead after that run",
    "Got a 5k PB this morning!",
    "Match is on at the pub, I'm saving you a stool",
    "Training cancelled, pitch is waterlogged",
    "Fancy a game of squash this week?",
    "Are you doing the Saturday run round the park?",
    "Tickets for the away game sold out in an hour, gutted",
    "Cricket's rained off, back home by 3",
    "Swim lesson moved to Wednesday",
    "Can I borrow your bike helmet for Sunday's ride?",
    "Feeling rough, think I'm coming down with something",
    "Doctor says it's just a sprain, need to rest it for a week",
    "Got my appointment through for the 9th at 10.20",
    "How's your back today?",
    "Hope you're feeling better, let me know if you need anything",
    "I'm off sick today so text don't call, my voice has gone",
    "Results came back clear, such a relief",
    "Took the dog to the vet, he's fine, just ate something he shouldn't",
    "Prescription's ready to collect from the chemist",
    "Dentist at 2, then I'm all yours",
    "Can't sleep, my tooth is killing me",
    "Remember to take your tablets with food",
    "She's out of surgery and awake, all went well",
    "Broke my toe on the bed frame. Don't laugh",
    "So sorry to hear about your dad. Thinking of you all",
    "I just heard the news. I'm here if you want to talk, any time",
    "The funeral is on Thursday at 11, at the church on the hill",
    "Thinking of you today, I know it's a hard one",
    "We're so sorry about Bramble, she was the best dog",
    "Sending you a big hug. Don't feel you have to reply",
    "Why is your cat on my roof",
    "That's the worst pun I've ever heard and I'm stealing it",
    "lol you're such an idiot",
    "I can't believe you said that to his face haha",
    "Dad just tried to answer the TV remote like a phone",
    "My autocorrect changed meeting to melting, sorry about that last message",
    "hahaha stop, I'm crying",
    "Your haircut is growing on me. Slowly.",
    "I'm never drinking again. Until Friday.",
    "Guess who fell in the canal last night. Not me for once",
    "Went in for one thing and came out with 40 quid of stuff, classic",
    "Milk, eggs, bread, and whatever cereal the kids like",
    "Can you get bin bags, loo roll and a lemon",
    "Need onions, garlic, chopped toms and pasta for tonight",
    "Pick up some paracetamol if you pass the chemist",
    "We're out of dog food",
    "If they've got those cheap croissants get a bag",
    "Only the green washing up liquid, not the blue one",
    "Butter, cheese, something for pudding. Ta",
    "Do we need anything from the shop? I'm going now",
    "Got the wrong size nappies, can you swap them on your way back?",
    "Birthday candles! I forgot candles",
    "Turn left after the garage, it's the house with the red door",
    "Come round the back, the front bell doesn't work",
    "Flat 4B, buzz twice",
    "We're on the third floor, lift's broken sorry",
    "Follow the signs for the hospital then take the second right",
    "It's the big grey building opposite the park",
    "Park on the street, the drive is full",
    "If you hit the roundabout you've gone too far",
    "Postcode takes you to the wrong end of the road, we're nearer the church",
    "Keep walking past the chip shop, I'll wave",
    "k",
    "Yeah",
    "No worries",
    "lol",
    "Ta",
    "Nice one",
    "Thanks!!",
    "Will do",
    "Cool cool",
    "yes please",
    "Not sure yet, will let you know",
    "Alright",
    "Haha yes",
    "Maybe",
    "Yeah go on then",
    "np",
    "Got it, thanks",
    "Oh no",
    "Night x",
    "Morning",
    "ofc",
    "soz",
    "Same",
    "Done",
    "ha fair enough",
    "wot u doin 2nite",
    "gonna b l8 soz",
    "hav u got the keys? cnt find mine",
    "thx 4 yesterday had a gr8 time",
    "u comin out or wot",
    "dnt 4get ur charger this time",
    "ill cal u wen im home",
    "r we stil goin 2 the gig",
    "im so tird cant even",
    "omg did u hear bout sarah n dave",
    "tb asap pls",
    "wat time u finishin",
    "brb",
    "ttyl, dinners ready",
    "can u txt me the adress again i deleted it by acident",
    "sry missd ur call was in the shwer",
    "hw was the intervew?",
    "jus got in, wat a day",
    "nvm found it",
    "Can you send me the 15 for the taxi? Same account as last time",
    "Won a tenner on the scratchcard, drinks are on me",
    "Nan won a hamper in the church raffle, she's thrilled",
    "We came second in the quiz, £20 bar voucher!",
    "Just paid you back, should be in your account now",
    "The bank froze my card because I bought petrol abroad, so annoying",
    "Bank's shut on Sunday so I'll transfer the rent on Monday morning",
    "Got a letter from the bank about the mortgage, can we look at it together tonight",
    "The door code is 4471, then press the bell for flat 3",
    "Wifi password is on the back of the router, it's the long one",
    "My new number is 07700 900314, delete the old one",
    "Call me on 07700900872 when you get this, my other phone's dead",
    "ring the plumber on 01632 960219 he's expecting you",
    "Call me when you get this, nothing bad, just easier than texting",
    "call me",
    "Delivery man says your parcel is in the green bin, sorry",
    "Your parcel came, I signed for it and put it in your room",
    "Food shop delivery is coming between 6 and 7, can you be in?",
    "The furniture delivery is booked for Tuesday morning",
    "My pin for the gate is 2580 if you get there first",
    "Booking reference is 7GH22K if they ask at the desk",
    "Ring the surgery on 01632 960507 at 8 sharp, that's the only way to get an appointment",
    "Lottery syndicate money is due, £2 each",
    "Our Maisie won the school raffle, a giant teddy bear. Where do we even put it",
    "I've got a spare ticket for the match Saturday if you want it, free",
    "Got 50% off my car insurance just by ringing them, worth doing",
    "Council tax is £142 this month, I'll put mine in the joint account",
    "Can you lend me a fiver till tomorrow",
    "5 pounds each for the leaving present, I'll collect at work",
    "The winning number was 38 and I had 39. Story of my life",
    "That's £27.50 you owe me for the concert, no rush",
    "Sent £40, check it arrived",
    "The dentist texts me your reminders because I booked it, yours is 3.40 tomorrow",
    "Free tonight? It's been ages",
    "The login codes keep going to my old phone, can you read it out when I ring?",
    "Don't give anyone the code from the bank, Dad got a dodgy call yesterday",
    "If you get a text saying you've won something it's a scam, delete it",
    "I think Mum fell for one of those parcel fee texts, can you call her?",
    "The cat has brought in a frog, please come home",
    "Power cut on our street, anyone else?",
    "Snowing here! Schools will shut for sure",
    "The boiler man can come Friday between 8 and 12",
    "Have you watered the plants?",
    "It's freezing in here, where's the thermostat?",
    "Found your earring under the sofa",
    "Is it bin day tomorrow or Thursday?",
    "Garden looks amazing after the weekend, well done",
    "Can you record the final for me tonight",
    "Finished the book you lent me, the ending was brilliant",
    "Started learning guitar, my fingers hate me",
    "The puppy chewed my shoe. The good one.",
    "Dog needs walking at lunch, can you do it?",
    "There's a massive spider in the bath and I'm not dealing with it",
    "Did you remember to lock the car?",
    "The neighbours are having a party again",
    "Smoke alarm keeps beeping, I think it needs a new battery",
    "Moved into the new place! Boxes everywhere",
    "What's the name of that song from the advert?",
    "Just watched the whole series in one go, no regrets",
    "Pizza or Chinese? You choose",
    "We've run out of gas for the barbecue",
    "Rainbow over the field right now, look outside",
    "Tidied your room, you owe me",
    "Can you send me that recipe?",
    "Forgot my lunch, any chance you could bring it in?",
    "Picking the keys up from the estate agent at 12",
    "Our flight home is at 6am, why did we do this",
    "Hi love, it's Mum. I've worked out how to text. Call when you can",
    "Dear Peter, thank you for the lovely card and the chocolates. Hope to see you soon. Regards, Margaret",
    "Good morning! Hope your first day goes well, you'll smash it",
    "Just to let you know the meeting minutes are on the shared drive",
    "Reminder that book club is at Jane's this month, bring a bottle",
    "Choir practice is cancelled this week, the vicar's poorly",
    "The allotment has gone mad with courgettes, want some?",
    "I've left a bag of apples on your doorstep",
    "Thanks for having the kids, they had a brilliant time",
    "Hope the move went ok, shout if you need anything",
    "Congratulations on your engagement!! So happy for you both",
    "Can't believe you're 40, happy birthday old man",
    "Happy birthday! Have a good one x",
    "Merry Christmas to you and the family",
    "Happy new year! Here's to a better one",
    "Well done on the exams, we're all so proud",
    "Good luck today, fingers crossed for you",
    "Drive safe, text when you're home",
    "Home safe x",
    "Night night, sleep well",
    "Love you, see you tomorrow",
    "Miss you already",
    "Thinking about that holiday again, can we go back next year?",
    "I've booked the cottage for the first week in August",
    "Passports! Check yours hasn't expired",
    "Ferry's running late, we'll probably miss dinner",
    "Hotel's lovely, pool is freezing though",
    "Having a great time, weather's been perfect",
    "Back Sunday night, feed the fish please",
    (
        "Hi, just wanted to say sorry about last night. I was tired and took it out on you. Can we talk later"
        " when you're back from work?"
    ),
    (
        "So the plan is we meet at the station at 9, get the train down, drop bags at the hotel and go "
        "straight to the beach. Bring sun cream!"
    ),
    (
        "Update on Dad: they're keeping him in overnight for observation but he's sitting up and complaining "
        "about the food so he's fine"
    ),
    "Just spoke to the garage, the car needs a new clutch. £480. I could cry",
    "Can you ask your brother if he still has our ladder",
    "Left my umbrella at yours, I'll grab it Sunday",
    "The film starts at 8.10 not 8, I checked",
    "Is Steph coming tonight or is she still ill?",
    "What did you think of the new neighbours?",
    "I'm making lasagne, want me to save you some?",
    "The dog's been sick on the rug. Lovely",
    "Mum's car is in for its MOT so can you give her a lift to bingo",
    "Don't tell anyone yet but I'm pregnant!!",
    "Sorted the insurance, it's cheaper than last year for once",
    "Fancy a walk up the hill Sunday morning if it's dry?",
    "It's my round next time, don't let me forget",
    "Did I leave my purse in your car?",
    "Just checked and the holiday's all paid off",
    "Who's got the spare key to Mum's?",
    "Water's been turned off in our road for repairs till 4",
    "Any chance you could feed the cat Tuesday and Wednesday?",
    "Hope the journey's ok, let me know when you're there",
    "The plumber's just left, kitchen tap fixed at last",
    "Got my exam results, passed everything!",
    "Re-sitting maths in June, not the end of the world",
    "Can you proofread my cover letter tonight? Only one page",
    "Ben's been made captain of the under 12s, he's buzzing",
    "Meet you at the main gate after the game",
    "Bought the tickets, row G seats 10 and 11",
    "I'll leave the key under the plant pot",
    "Stay safe in that storm, it looks horrendous on the news",
    "Your jumper is in the wash, you can have it back Thursday",
    "Can I ring you in 10? Just putting the kids to bed",
    "Who won in the end? I fell asleep",
    "The quiz team needs a fifth person on Wednesday, you in?",
    "The shop had sold out of the cake so I got a different one",
    "You left your lights on in the car",
    "Coming back with chips, text me your order",
    "Doorbell camera shows a fox in the garden at 3am haha",
    "Just had the best sandwich of my life",
    "I need a holiday. A long one",
    "Nearly finished my essay, 300 words to go",
    "Library shuts at 7 today, thought you'd want to know",
    "Is anyone else's internet down?",
    "I'm on the 17.05, gets in at 18.20",
    "Are you still selling your old bike?",
    "The rain's stopped, footy is back on",
    "Don't forget your mum's birthday is Tuesday",
    "Ok I'm coming, 5 mins",
    "It's fine honestly, don't worry about it",
    "What do you want for your birthday?",
    "Had to take the long way, the high street is closed",
    "Great to see you today, let's not leave it so long next time",
    "The vet bill was £220, that dog is costing us a fortune",
    "He asked me out!!! Call me later",
    "Kettle's on",
    "I've put the chicken in, 40 minutes",
    "Dad says bring the big speaker",
    "Stop texting me in capitals, I can hear you shouting from here",
    "If you're passing the post office, could you post my letter?",
    "We might be a bit late, the baby's just woken up",
    "Honestly you were brilliant on stage tonight",
    "How did the driving lesson go?",
    "Got to get my eyes tested, can't read the board anymore",
    "They've changed the bus times again so I'll be 10 mins later every day",
    "The sofa's coming on the 3rd, can you help me carry the old one out?",
    "Thanks for lunch, my turn next",
    "Still up for the car boot sale on Sunday? Need to be there by 7",
    "Tomorrow's forecast is sun all day, beach?",
    "The lift's out so I'm taking the stairs, give me a minute",
    "Did you sort the invoice for the Harrison job?",
    "I sent the wrong file, use the second one",
    "Our Jack has got into uni!",
    "Which one's your house again, 12 or 14?",
    "What's your sister's address, I want to send her a card",
    "Sorry to text so late, are you awake?",
    "Mum wants to know if you're still vegetarian",
    "I'll ring the school and tell them he's ill",
    "Not long now, excited to see you",
    "Your dinner's in the microwave, 3 mins",
    "The lawn needs mowing, any volunteers",
    "Grandad got the tablet working, expect video calls from now on",
    "Made it to the top! Views are incredible",
    "Can you ask at reception if my glasses were handed in",
    "Ferry tickets are booked, we sail at 8.45",
    "Just realised it's Friday tomorrow, best news all week",
    "Stuck in a meeting that could have been an email",
    "The toddler has discovered the word no",
    "Went for a swim in the sea, absolutely freezing",
    "What size shoes does Lily wear now?",
    "Are you watching the match or the film tonight",
    "Can't find the remote, have you got it",
    "We need to talk about the holiday budget at some point",
    "Tea's ready in 10, wash your hands",
    "Don't buy bread, I've made some",
    "Have you got the receipt for the kettle? It's broken already",
    "Thanks for the lift this morning, you're a star",
    "I'm at the hairdresser, will reply in a bit",
    "Back door key is on the hook",
    "Remember Sunday is Mother's Day",
    "Pick me up at the lights, I'm not walking in this rain",
    "Netball's moved to the sports hall because of the wind",
    "The takeaway was late and cold, never again",
    "How's the new job treating you?",
    "Do you still want my old pram for your sister?",
    "I left a voicemail but call me back when you can, it's about Saturday",
    "Sorry, wrong person! Ignore that",
    "That was meant for Kate, ignore me",
    "Just seen your message, yes that's fine",
    "Gran's in good spirits today, asking after you",
    "Any plans for the bank holiday?",
    "Bring a coat, it's meant to pour",
    "The car park's free after 6 so come then",
    "Mum's sent a parcel for you, it's at ours",
    "Dinner was lovely, thank you both",
    "We've got a leak in the bathroom ceiling. Again",
    "Are you still ok to lend us the tent?",
    "Just got an email saying the concert's been moved to November",
    "That new bakery by the station is amazing, go",
    "He's asleep on the sofa with the dog, sending you a picture later",
    "Can you give me a ring about the wedding seating plan",
    "Remember your swimming stuff tomorrow",
    "Meeting's over, I'm heading home now",
    "Can't find a parking space anywhere, going round again",
    "Our anniversary is Saturday, any ideas for a present?",
    "I'm going to try that yoga class on Monday, come with me?",
    "Bus driver let me on with no change, what a legend",
    "The hens are laying again, 6 eggs today",
    "Charging my phone at work, call the office if you need me",
    "Pay day tomorrow, thank goodness",
    "I'm selling my old sofa if anyone wants it, £50",
    "I owe Sam £12 for the cinema, remind me",
    "Got stopped by the police for a broken brake light, just a warning",
    "The bank finally sorted my card, I can pay you back now",
    "Parcel's been sitting at the post office for a week, I keep forgetting",
    "We came third in the raffle, won a bottle of wine",
    "Just won my first chess tournament, small one but still",
    "Can you text me Dan's new number? I lost it when I changed phones",
    "My security code for the app is being weird, I'll pay you in cash",
    "The delivery driver left our shopping next door by mistake",
    "I got a letter saying I'm owed a refund from the gas people, proper one for once",
    "Just seen the state of the kitchen. Who had a party?",
    "Mum says can you bring a salad on Sunday, not a trifle this time",
    "Is the pharmacy open on Sundays? Need medicine for the little one",
    "The heating engineer wants £90 just to come out, is that normal?",
    "Reading your message on the bus and laughing out loud, people are staring",
    "Do you know anyone who does ironing? I'd pay",
    "Off to the tip with all the cardboard, back in an hour",
    "Can you tell Amir I've got his drill",
    "Just found a tenner in my winter coat, best day ever",
    "I've signed us up for the charity walk in May, hope that's ok",
    "Tiles for the bathroom came in the wrong colour, sending them back",
    "The boys are fighting over the Xmas list already",
    "We're thinking of getting a rescue dog, what do you reckon?",
    "Do you still have that number for the window cleaner?",
    "My hands are covered in paint so voice note me instead",
    "Went to vote, queue was out the door",
    "I've lost my voice from the concert, totally worth it",
    "The scaffolding is going up next door tomorrow so park on the left",
    "Met your old teacher in the shop, she says hello",
    "Can I pop round and borrow an onion",
    "Haven't had a reply from the landlord for 3 days now",
    "Sorry I've been quiet, it's been a mad few weeks",
    "How long do I boil the eggs for? Don't laugh",
    "Tent's up, the kids are asleep, stars are amazing out here",
    "We're stuck on the motorway, there's been a crash ahead",
    "Remember to set the clocks back tonight",
    "Is your mum feeling any better today?",
    "My phone's on 3%, if I go quiet that's why",
    "Just been paid for the freelance job, finally",
    "Knee's still swollen, might get it looked at",
    "The baby said Dada today! Not Mama, rude",
    "I'll have the kids Friday, you have them Saturday?",
    "Hi it's Claire from next door, your gate's blowing open in the wind",
    "Dear all, the residents meeting is on Tuesday at 7 in the community hall",
    "Good news, the vet says Biscuit can come home tomorrow",
    "Sorry to hear you didn't get the house, something better will come up",
    "Can you believe it's been a year since the wedding",
    "Tell me honestly, was my speech too long?",
    "We're off to the coast for the day, back late",
    "Supermarket's out of eggs, got some at the corner shop instead",
    "You were right about the film, total rubbish",
    "I've ordered you a birthday present, it might be late, sorry",
    "Just making sure you got home ok after last night?",
    "Can you take the recycling out when you get up",
    "That coffee place has shut down, where now",
    "The car's booked in for a service on the 12th",
    "Thanks for listening yesterday, really needed it",
    "Meet at the clock tower, 10 sharp",
    "There's a bike left outside our house for days, should we report it?",
    "The hamster escaped. Found him in the cereal cupboard",
    "Ollie's invited to a party Saturday, can you do the lift?",
    "Work is giving us an extra day off for the jubilee, woohoo",
    "Decorators finish tomorrow, then we can move the furniture back",
    "My turn to host book club, what shall I cook?",
    "I ate too much cake. Send help",
    "Congrats on the promotion, you deserve it",
    "Guess what came in the post today. Jury service",
    "Fridge is making a funny noise, is that bad",
    "If you see Tom tell him to ring his mother",
    "Weather's rubbish here, how is it up north?",
    "Where did we put the Christmas decorations last year?",
    "Got the keys to the allotment, let the digging begin",
    "The washing's on the line, bring it in if it rains please",
    "The kids want to know if they can have a sleepover at Nan's",
    "Quick question, what's the name of your accountant?",
    "Any idea what time the tip closes on Sundays?",
    "Just heard the twins got into the same class, so relieved",
    "He finally proposed!!! I said yes obviously",
    "Lovely to catch up, speak soon",
    "Sorry I snapped earlier, long day",
    "I'll bring the cards, you bring the snacks",
    "Made a vet appointment for Friday at 4.50 for the cat's jab",
    "Could you bring a torch, the car park's dark",
    "How's the revision going? Take breaks!",
    "Bought a new phone, same number though",
    "The window man rang, he's coming at 2",
]

SPAM: list[str] = [
    (
        "URGENT! Your number was drawn in our mobile lottery. You have won £2,500. Call 09098790412 before "
        "5pm to claim. Ref K9"
    ),
    (
        "Congratulations, you are our lucky winner this month! A brand new tablet is waiting for you. Collect"
        " at prizedesk.example"
    ),
    (
        "WINNER!! As a selected network customer you have been awarded a £900 prize reward. Claim code PZ441."
        " Valid 12 hours"
    ),
    (
        "Your ticket numbers 4 11 23 29 matched the international draw. Send your full name and home address "
        "to the claims agent for release of funds"
    ),
    "You've been randomly picked to receive a luxury hamper worth £150. Just pay £2.95 postage at hampers-gift.example",
    "Final attempt to contact you regarding your unclaimed cash prize. Ring 09098 790667 today. Calls cost £1.50/min",
    "holiday 4 2 in the sun is yours!! call 09098790128 now 2 book ur dates. pobox 45",
    "This is the 2nd time we have tried to reach you. Your £750 award is ready. Call 09098 790233 from a landline",
    (
        "Your parcel could not be delivered due to unpaid postage of £1.45. Please pay at "
        "redelivery-now.example to avoid return to sender"
    ),
    "Courier: we attempted delivery today but nobody was home. Choose a new slot: parcel-track.example/r/8812",
    "Customs fee of £2.99 outstanding on package GB7712. Release it here customs-pay.example",
    (
        "Your order is on hold at our warehouse. Confirm address details within 48hrs or it will be "
        "destroyed. www.order-hold.example"
    ),
    "hi, the driver couldnt find ur house, plz update ur address so we can deliver 2moro: my-delivery.example",
    "Package notice: incomplete address information. Update now: addr-fix.example",
    (
        "A new payee was added to your account at 21:14. If this was NOT you, call our fraud team on 0808 157"
        " 0345 immediately"
    ),
    (
        "We have detected a login from a new device. If this wasn't you, secure your account at "
        "online-banking-check.example"
    ),
    "Your debit card has been temporarily restricted. To lift restrictions verify your identity at card-verify.example",
    "FRAUD ALERT: Did you attempt a purchase of £849.99 at an electronics store? Reply Y or N",
    "Dear customer your online banking access will expire today. Reactivate: secure-login-update.example",
    "Your account is at risk. Do not ignore this message. Call 09098790550 to speak to a security adviser",
    "A direct debit of £79.50 has been set up on your account. If you did not authorise this visit cancel-dd.example",
    "Your savings account has been frozen pending verification. Please ring 0808 157 0092 and have your card ready",
    (
        "Turn £250 into £5,000 in a week with our AI trading robot! Thousands already earning. Sign up at "
        "quickprofit.example"
    ),
    "Bitcoin is about to explode again. Our VIP signals group made 340% last month. Join free: coin-signals.example",
    "hi dear, my uncle works in investment and showed me how to make 2k a day from home, want me to introduce you?",
    "Gold investment opportunity. Guaranteed returns of 18% a year with no risk. Reply INFO for a brochure",
    (
        "Your crypto wallet has a pending withdrawal of 0.42 BTC. Confirm now at wallet-verify.example or "
        "funds will be lost"
    ),
    "Ever wondered how ordinary people retire early? Free webinar tonight, seats limited: wealth-secret.example",
    "New token launching Friday - early buyers get a 10x bonus. Whitelist spots almost gone!",
    "Need cash fast? Borrow up to £5,000 today, bad credit ok, money in your account in 15 mins. Reply LOAN",
    "Pre-approved! You qualify for a £12,000 personal loan at just 2.9%. Call 0808 157 0781 free to accept",
    (
        "Struggling with debt? A new government scheme can write off up to 80% of what you owe. Check if you "
        "qualify: debtfree-check.example"
    ),
    "payday loans no questions asked, up to 1000 quid same day. txt CASH to 81234",
    "Your loan application has been accepted. To release the funds, a one-off insurance fee of £95 is required",
    "Hi handsome, I'm Kerry, 24, just moved to your area and don't know anyone. Text me back? 09098790019 £1.50/min",
    "Lonely tonight? Hundreds of local women want to chat NOW. Reply CHAT to 85050. 18+ £1/msg",
    "Someone fancies you! Find out who by texting LOVE to 83322. Msgs 150p",
    "You have 3 unread messages from a secret admirer. Open them at matchup-inbox.example",
    "heyy, sorry wrong number i think? but ur profile pic looks familiar lol. whats ur name",
    "Adult chat line: live girls waiting 24/7. Call 09098 790301 now. Calls cost £1.53 per minute plus network charges",
    "Tired of being single? Our matchmakers have found 5 people near you. See them free: lovematch.example",
    "Answer 1 simple question to win a new car! What colour is the sky? Text A) blue B) green to 86688. £2 per entry",
    "This week's star prize is a 65 inch TV. To enter, call 09098790872 and answer 3 questions. Calls £2.50",
    "FREE entry 2 our cup final comp! Txt FOOTY to 80086 to receive ur question. 16+ std txt rates apply",
    (
        "Quiz time! Name the capital of France and you could take home £1,000. Reply with your answer. 150p "
        "per txt, 3 txts per week"
    ),
    "Your free trial of Premium Tones has ended. You will now be billed £4.50 per week. To cancel send STOP to 89012",
    "Get this week's top 10 chart ringtones sent straight to your phone! Reply TONES. 3/wk £1.50 each",
    "Funny video alert! Send LOL to 81818 for daily clips. £3/week until you send STOP",
    "Your subscription to Daily Horoscopes has been renewed. £6 has been added to your bill",
    "Wallpapers, games and more for your mobile, new every day! Reply GO to 80222. 18+ £4.50/wk",
    "You are eligible for a tax rebate of £326.18. Submit your claim before the deadline at taxrefund-portal.example",
    "Energy bill refund: you were overcharged £184.30 this year. Claim your money back now: energy-refund.example",
    "We owe you money! Your council tax band was wrong and you can claim back up to £2,000. Reply CLAIM",
    (
        "Your phone provider has issued a refund of £48.20. To receive it, enter your card details at "
        "refunds-mobile.example"
    ),
    (
        "Were you mis-sold insurance with a loan or credit card? You could be owed thousands. Reply YES for a"
        " free check or STOP to opt out"
    ),
    (
        "Hello, we found your CV online. We offer remote part-time work, 1-2 hours a day, earn £200-£500 "
        "daily. Message us on 07700 900551"
    ),
    "Job offer: product reviewer needed. Work from your phone, paid daily. Age 22+. Reply JOB to apply",
    (
        "Hi I'm Sarah from a recruitment agency, you've been shortlisted for a data entry role paying £35/hr."
        " Please confirm your interest"
    ),
    (
        "Mystery shoppers wanted in your area! Get paid to shop and keep what you buy. Register free at "
        "shopper-jobs.example"
    ),
    "EARN FROM HOME!!! No experience needed, just a phone. Start today, paid weekly. Text WORK to 84455",
    "Thanks for being a loyal customer! Complete our 2 minute survey and get a £100 gift card. survey-rewards.example",
    (
        "You've been chosen for our customer satisfaction survey. Answer 5 questions and receive a free "
        "smartwatch (just pay shipping)"
    ),
    "Tell us what you think and win! Every survey completed this week enters a £5,000 draw",
    "You have 1 new voicemail. To listen, dial 09098790660",
    "New voice message received (0:42). Tap to play: voicebox-play.example",
    "Missed call from an unknown number. The caller left a message for you. Retrieve it free at callback-msg.example",
    "200 FREE SPINS waiting for you! No deposit needed. Play now at lucky-reels.example",
    "Your welcome bonus of £50 is still unclaimed. Deposit £10 and play with £60 tonight",
    "JACKPOT ALERT: the mega slot is now over £1 million. Could tonight be your night? spin-palace.example",
    "Bet £5 get £30 in free bets on this weekend's football. New customers only. 18+ gamble responsibly",
    "FLASH SALE: 70% off all trainers for the next 3 hours only. Shop now at shoe-outlet.example",
    "Your basket is waiting! Complete your order in the next hour and get free next day delivery",
    "Exclusive VIP offer: buy 1 get 2 free on all fragrances this weekend. Show this text in store",
    "Designer handbags from £19.99!! Genuine stock clearance. www.bag-clearance.example",
    "Mega clearance at the furniture warehouse: sofas from £99, beds from £79. This Sunday only, doors open 10am",
    "Hi Mum, I've dropped my phone in the bath, this is my new number. Can you text me here? Need a favour x",
    "Hey it's me, lost my phone so using a friend's. Can you send £180 to this account, I'll pay you back tomorrow",
    "PARKING: You have an unpaid penalty charge of £60. Pay within 7 days to avoid enforcement action: pcn-pay.example",
    (
        "Your streaming subscription has been suspended due to a payment failure. Update your details: "
        "stream-billing.example"
    ),
    "Your phone is eligible for a FREE upgrade to the latest model. Call 0808 157 0412 quoting UP22",
    (
        "Had an accident at work in the last 3 years? You could be entitled to compensation. Reply CLAIM for "
        "a free callback"
    ),
    "Your vehicle tax is overdue. Pay now to avoid a £1000 fine: vehicle-tax-renew.example",
    "Government energy grant: your home qualifies for free solar panels and a new boiler. Call 0808 157 0967",
    "Your mobile contract is due for renewal. Keep your number and get double data for half price, reply YES",
    "congrats ur phone number has been selected for a free 7 night cruise!! pay only port taxes of £49",
    "Unpaid toll charge: £6.99 due for your journey over the bridge. Pay now or a £35 fee will be added",
    "Your cloud storage is full. Photos will be deleted in 24 hours unless you upgrade: cloud-upgrade.example",
    "your email account password expires today, keep same password here: mail-keep.example",
    "Final reminder: your broadband is being cut off tomorrow. Call 09098790774 to keep your line active",
    (
        "Re: your pension. You may be able to access it early from age 50. Free no-obligation review: "
        "pension-unlock.example"
    ),
    "WIN WIN WIN!!! a brand new scooter could be yours, txt RIDE to 82020 now!! 150p/msg 16+",
    "cheap meds online, no prescription needed, discreet delivery. meds-direct.example",
    "Weight loss miracle: drop 2 stone in 4 weeks without dieting. Free trial bottle at slim-trial.example",
    "Your friend has sent you an e-card! Open it here: ecard-view.example",
    "Gift card balance of £75 expiring today. Redeem before midnight at giftcard-redeem.example",
    (
        "You have been selected as a product tester for the new games console. Limited places, register at "
        "tester-panel.example"
    ),
    (
        "A package in your name was intercepted at the border. Contact the customs officer on 07700 900874 "
        "immediately or face prosecution"
    ),
    (
        "Hello, this is the police fraud unit. Your bank account has been used in a crime. Call 01632 960844 "
        "to assist with our enquiry"
    ),
    "Your TV licence payment failed. To avoid prosecution, update your payment at licence-renew.example",
    (
        "Hi there! I'm a friend of your cousin, she said you might be interested in an amazing business "
        "opportunity. Can I send you some info?"
    ),
    "Reply YES to claim free data and minutes for life!",
    "sexy singles r waiting 4 u tonight. no strings. txt HOT to 88776 now 18+ only",
    "last chance to book our half price holiday deals, sunshine breaks from £299pp. call 0808 157 0256 before midnight",
    (
        "Dear beneficiary, please confirm your bank details to receive your £15,000 inheritance payout from "
        "the estate of a distant relative"
    ),
    "ALERT: Your phone has been infected with a virus. Download the security app immediately: phone-clean.example",
    (
        "We noticed you haven't claimed your free gift for your birthday month. Claim before it expires: "
        "birthday-gifts.example"
    ),
    "Our records show your boiler cover has lapsed. Renew today for £8.99 a month, call 01632 960617",
    "This is your last reminder to book your free eye test with £100 off frames. Reply BOOK",
    "Free pizza for a year! Be one of the first 100 to sign up at pizza-club.example",
    "Did you know you could be paying less for your energy? We've found you a better deal, reply SWITCH",
    "Mobile game credits: 5,000 free gems for your account, enter your login at gems-free.example",
    "Hi, are you still looking for a flat? I have a lovely one, just need a holding deposit of £300 before the viewing",
    "Your payment to the online store could not be processed. Your order will be cancelled unless you update your card",
    "Congratulations! You won our selfie competition. To receive your prize send your address and a £3.50 admin fee",
    "URGENT from your energy supplier: the smart meter engineer visit needs confirming today, call 09098 790901",
    "Exclusive invite: private members casino night online, £500 matched bonus tonight only",
    "4 u: 50 free txts when u top up £10 today! reply TOPUP. t&cs apply",
    "Your friend Dan sent you money! Accept the £250 transfer within 24h: pay-accept.example",
    "Want a flat stomach by summer? Personal trainer plans for £1. Text FIT to 83030",
    "Claim your free prize: a pair of wireless earbuds. Just confirm you are over 18 at earbuds-prize.example",
]


def _key(text: str) -> str:
    """Key under which two texts count as the same: whitespace collapsed, lower-cased."""
    return " ".join(text.split()).lower()


def check(ham: list[str] = HAM, spam: list[str] = SPAM) -> None:
    """Raise ``ValueError`` if a message is empty, padded, has a tab or line break, starts with a
    quote, or repeats another (ignoring case and spacing, across both lists)."""
    seen: dict[str, str] = {}
    for label, texts in (("ham", ham), ("spam", spam)):
        for text in texts:
            if not text or text != " ".join(text.split()):
                raise ValueError(f"{label} message {text!r} is empty, padded or has a tab or line break")
            if text[0] in "\"'":
                raise ValueError(f"{label} message {text!r} starts with a quote")
            key = _key(text)
            if key in seen:
                raise ValueError(f"{label} message {text!r} repeats {seen[key]} message with the same text")
            seen[key] = label


def messages(seed: int = SEED) -> list[tuple[str, str]]:
    """Every ``(label, text)`` pair, ham and spam interleaved in a shuffled order fixed by ``seed``."""
    check()
    pairs = [("ham", text) for text in HAM] + [("spam", text) for text in SPAM]
    random.Random(seed).shuffle(pairs)
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the invented SMS example file (label<TAB>text lines).")
    parser.add_argument(
        "out", type=Path, help="file to write, e.g. plugins/text_classification/pipelines/data/sms-example.tsv"
    )
    args = parser.parse_args(argv)
    pairs = messages()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{label}\t{text}\n" for label, text in pairs)
    print(f"wrote {len(pairs)} messages ({len(HAM)} ham, {len(SPAM)} spam) to {args.out}")


if __name__ == "__main__":
    main()
